"""The per-request series are plain tallies read at scrape time: they must expose exactly
what prometheus-client's own metric objects would for the same observations."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from speculate.core.summary import RunSummary
from speculate.server.metrics import EDIT_BUCKETS, LATENCY_BUCKETS, Metrics

SUMMARIES = [
    RunSummary(
        "a",
        "edge",
        "done",
        "edge",
        stats={"draft_first_ms": 3.2, "final_ms": 400.0, "edit_distance": 0, "draft_tokens": 40},
    ),
    RunSummary(
        "b",
        "speculative",
        "done",
        "cloud",
        cloud_errors=("cloud_timeout",),
        stats={
            "draft_first_ms": 5,  # on a bucket's bound: counted in it (le)
            "cloud_first_ms": 80.5,
            "final_ms": 250_000.0,  # beyond the last bound: +Inf only
            "edit_distance": 17,
            "draft_tokens": 20,
            "cloud_tokens": 30,
            "cost_usd": 0.002,
            "cost_saved_usd": 0.001,
        },
    ),
    RunSummary("c", "edge", "error", cloud_errors=("refused", "refused"), queued=True),
    RunSummary("d"),  # cancelled before it started
]


def reference() -> CollectorRegistry:
    """The same observations through prometheus-client's own metrics."""
    r = CollectorRegistry()
    requests = Counter("speculate_requests", "Finished requests", ["route", "outcome"], registry=r)
    Gauge("speculate_active_requests", "Requests running now", registry=r).set(1)
    latency = {
        name: Histogram(
            f"speculate_{name}_seconds", doc, ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        for name, doc in (
            ("draft_first", "Time to the first draft token"),
            ("cloud_first", "Time to the first cloud token"),
            ("final", "Time to the final answer"),
        )
    }
    edits = Histogram(
        "speculate_edit_distance_chars",
        "Draft vs final edit distance",
        ["route"],
        buckets=EDIT_BUCKETS,
        registry=r,
    )
    tokens = Counter("speculate_tokens", "Generated tokens", ["side"], registry=r)
    errors = Counter("speculate_cloud_errors", "Cloud failures by kind", ["code"], registry=r)
    cost = Counter("speculate_cost_usd", "Cost of the answers", registry=r)
    saved = Counter(
        "speculate_cost_saved_usd", "Saved against sending everything to the cloud", registry=r
    )
    queued = Counter(
        "speculate_refinements_queued", "Cloud refinements queued while offline", registry=r
    )
    queued.inc()
    for code in ("cloud_timeout", "refused", "refused"):
        errors.labels(code).inc()
    requests.labels("edge", "final_edge").inc()
    requests.labels("speculative", "final_cloud").inc()
    requests.labels("edge", "error").inc()
    requests.labels("unknown", "cancelled").inc()
    latency["draft_first"].labels("edge").observe(0.0032)
    latency["final"].labels("edge").observe(0.4)
    latency["draft_first"].labels("speculative").observe(0.005)
    latency["cloud_first"].labels("speculative").observe(0.0805)
    latency["final"].labels("speculative").observe(250.0)
    edits.labels("edge").observe(0)
    edits.labels("speculative").observe(17)
    tokens.labels("edge").inc(60)
    tokens.labels("cloud").inc(30)
    cost.inc(0.002)
    saved.inc(0.001)
    return r


def exposed(registry: CollectorRegistry, *skip: str) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return sorted(
        line for line in lines if "_created" not in line and not any(name in line for name in skip)
    )


async def test_the_tallies_expose_what_prometheus_clients_own_metrics_would() -> None:
    metrics = Metrics()
    for summary in SUMMARIES:
        metrics.started(None)  # type: ignore[arg-type]
        await metrics.finished(None, summary)  # type: ignore[arg-type]
    metrics.started(None)  # type: ignore[arg-type]  # one still running
    gauges = ("speculate_edge_queue_depth", "speculate_cloud_up", "speculate_cloud_circuit_open")
    assert exposed(metrics.registry, *gauges) == exposed(reference())
