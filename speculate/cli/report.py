"""``speculate report``: what the traffic in the request log looked like and cost.

Tables in the terminal, PNG plots on disk: latency per route, the share of requests
per route, this traffic's cost as all-edge, all-cloud and hybrid, and a fleet
projection (devices × requests per month) in the manner of the cost tables of the
edge-vs-cloud guide this product grew from.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from speculate.errors import ConfigError
from speculate.policy.cost import edge_energy_per_mtok, edge_hardware_per_month, prices
from speculate.settings import CostSettings

PER_TOKEN = 1e-6


@dataclass(frozen=True, slots=True)
class TrafficCost:
    requests: int
    hybrid: float  # what was paid per the request log
    all_cloud: float
    all_edge: float
    cloud_part: float  # of the hybrid: paid to the cloud
    edge_energy: float  # of the hybrid: the device's power


def load(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        raise ConfigError(f"no request log at {db}; run the server first (store.request_log)")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM requests")]


def traffic_cost(rows: list[dict[str, Any]], costs: CostSettings) -> TrafficCost:
    price = prices(costs)
    energy = edge_energy_per_mtok(costs)
    hybrid = all_cloud = all_edge = cloud_part = edge_energy = 0.0
    done = [r for r in rows if r["outcome"] == "done"]
    for r in done:
        prompt, draft, cloud = (
            (r["prompt_tokens"] or 0),
            (r["draft_tokens"] or 0),
            (r["cloud_tokens"] or 0),
        )
        answer = cloud if r["final_source"] == "cloud" else draft
        hybrid += r["cost_usd"] or 0.0
        all_cloud += (r["cost_usd"] or 0.0) + (r["cost_saved_usd"] or 0.0)
        all_edge += (prompt + (draft or answer)) * price.edge * PER_TOKEN
        if r["route"] != "edge":
            cloud_part += (prompt * price.cloud_in + cloud * price.cloud_out) * PER_TOKEN
        if r["route"] != "cloud":
            edge_energy += (prompt + draft) * energy * PER_TOKEN
    return TrafficCost(len(done), hybrid, all_cloud, all_edge, cloud_part, edge_energy)


def fleet_projection(
    cost: TrafficCost, costs: CostSettings, fleets: list[int], requests_per_month: int
) -> list[dict[str, float]]:
    """Year-one cost of a fleet: devices bought and run, cloud paid per request."""
    if not cost.requests:
        return []
    per_request_cloud_only = cost.all_cloud / cost.requests
    per_request_hybrid_cloud = cost.cloud_part / cost.requests
    per_request_energy = cost.edge_energy / cost.requests
    hardware_year = edge_hardware_per_month(costs) * 12
    rows = []
    for devices in fleets:
        yearly = devices * requests_per_month * 12
        energy = yearly * per_request_energy
        rows.append(
            {
                "devices": devices,
                "requests_per_year": yearly,
                "edge": devices * hardware_year + energy,
                "cloud": yearly * per_request_cloud_only,
                "hybrid": devices * hardware_year + energy + yearly * per_request_hybrid_cloud,
            }
        )
    return rows


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "–"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]:.0f}"


def _plots(
    rows: list[dict[str, Any]], cost: TrafficCost, fleet: list[dict[str, float]], out: Path
) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'speculate[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, path: Path) -> None:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_route[r["route"] or "unknown"].append(r)
    routes = sorted(by_route)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in (
        (axes[0], "draft_first_ms", "time to first text"),
        (axes[1], "final_ms", "time to final answer"),
    ):
        data = [[r[key] for r in by_route[route] if r[key] is not None] or [0] for route in routes]
        ax.boxplot(data, tick_labels=routes)
        ax.set_title(title)
        ax.set_ylabel("ms")
    save(fig, out / "latency.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    counts = [len(by_route[route]) for route in routes]
    ax.bar(routes, [c / max(1, len(rows)) * 100 for c in counts], color="#2456d6")
    ax.set_ylabel("% of requests")
    ax.set_title("requests per route")
    save(fig, out / "routes.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar(
        ["all edge", "all cloud", "hybrid"],
        [cost.all_edge, cost.all_cloud, cost.hybrid],
        color=["#6b6b70", "#c0392b", "#12632a"],
    )
    ax.set_ylabel("USD")
    ax.set_title(f"this traffic ({cost.requests} answers)")
    save(fig, out / "cost.png")

    if fleet:
        fig, ax = plt.subplots(figsize=(7, 4))
        labels = [f"{int(f['devices'])} devices" for f in fleet]
        width = 0.27
        for i, (key, color) in enumerate(
            (("edge", "#6b6b70"), ("cloud", "#c0392b"), ("hybrid", "#12632a"))
        ):
            ax.bar(
                [x + (i - 1) * width for x in range(len(fleet))],
                [f[key] for f in fleet],
                width,
                label=key,
                color=color,
            )
        ax.set_xticks(range(len(fleet)), labels)
        ax.set_yscale("log")
        ax.set_ylabel("USD, year one")
        ax.legend()
        ax.set_title("fleet projection")
        save(fig, out / "fleet.png")
    return written


def corrections(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How much the cloud corrects the edge, per edge model and day: answers the edge
    drafted and the cloud finished (speculative and verify), the share whose draft changed,
    and the edit distance per answer (median, p90)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in rows:
        if r["outcome"] != "done" or r["final_source"] != "cloud":
            continue
        if r["route"] not in ("speculative", "verify"):
            continue
        day = time.strftime("%Y-%m-%d", time.gmtime(r["finished_at"]))
        groups[(r.get("edge_model") or "unknown", day)].append(int(r["edit_distance"] or 0))
    out = []
    for (model, day), distances in sorted(groups.items()):
        ordered = sorted(distances)
        out.append(
            {
                "edge model": model,
                "day": day,
                "answers": len(distances),
                "corrected": sum(1 for d in distances if d > 0) / len(distances),
                "median edit": statistics.median(ordered),
                "p90 edit": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
            }
        )
    return out


def run_report(
    db: Path, out: Path, costs: CostSettings, *, fleets: list[int], requests_per_month: int
) -> int:
    rows = load(db)
    console = Console()
    if not rows:
        console.print(f"the request log {db} is empty")
        return 0
    routes = Table(title=f"requests by route ({len(rows)} in {db})")
    for column in (
        "route",
        "requests",
        "share",
        "outcomes",
        "first text p50 ms",
        "first cloud p50 ms",
        "final p50 ms",
        "final p90 ms",
    ):
        routes.add_column(column, justify="right")
    by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_route[r["route"] or "unknown"].append(r)
    for route, group in sorted(by_route.items()):
        outcomes = Counter(r["outcome"] for r in group)

        def values(key: str, group: list[dict[str, Any]] = group) -> list[float]:
            return [float(r[key]) for r in group if r[key] is not None]

        routes.add_row(
            route,
            str(len(group)),
            f"{len(group) / len(rows):.0%}",
            ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
            _ms(values("draft_first_ms"), 0.5),
            _ms(values("cloud_first_ms"), 0.5),
            _ms(values("final_ms"), 0.5),
            _ms(values("final_ms"), 0.9),
        )
    console.print(routes)

    cost = traffic_cost(rows, costs)
    money = Table(title=f"what these {cost.requests} answers cost")
    for column in ("strategy", "USD", "per answer", "vs all-cloud"):
        money.add_column(column, justify="right")
    for name, value in (
        ("all edge", cost.all_edge),
        ("all cloud", cost.all_cloud),
        ("hybrid (actual)", cost.hybrid),
    ):
        share = f"{value / cost.all_cloud:.0%}" if cost.all_cloud else "–"
        money.add_row(name, f"{value:.6f}", f"{value / max(1, cost.requests):.8f}", share)
    console.print(money)

    fleet = fleet_projection(cost, costs, fleets, requests_per_month)
    if fleet:
        plan = Table(
            title=f"fleet projection, year one, {requests_per_month:,} requests/device/month"
        )
        for column in ("devices", "requests/year", "all edge", "all cloud", "hybrid", "cheapest"):
            plan.add_column(column, justify="right")
        for f in fleet:
            best = min(("edge", "cloud", "hybrid"), key=lambda k: f[k])
            money_cells = [f"${f[k]:,.0f}" for k in ("edge", "cloud", "hybrid")]
            plan.add_row(
                f"{int(f['devices']):,}", f"{int(f['requests_per_year']):,}", *money_cells, best
            )
        console.print(plan)
    median_edit = statistics.median(
        [r["edit_distance"] or 0 for r in rows if r["outcome"] == "done"] or [0]
    )
    console.print(f"median draft-vs-final edit distance: {median_edit:.0f} characters")
    panel = corrections(rows)
    if panel:
        table = Table(title="how much the cloud corrects the edge (per edge model and day)")
        for column in ("edge model", "day", "answers", "corrected", "median edit", "p90 edit"):
            table.add_column(column, justify="right")
        for row in panel:
            table.add_row(
                row["edge model"],
                row["day"],
                str(row["answers"]),
                f"{row['corrected']:.0%}",
                f"{row['median edit']:.0f}",
                str(row["p90 edit"]),
            )
        console.print(table)
    for path in _plots(rows, cost, fleet, out):
        console.print(f"wrote {path}")
    return 0
