"""`speculate report`: the request log read back, and the panel on how much the cloud
corrects the edge per edge model and day."""

from __future__ import annotations

import calendar
import time
from pathlib import Path

from speculate.cli.report import corrections, load, run_report
from speculate.core.request import SpeculateRequest
from speculate.core.summary import RunSummary
from speculate.settings import CostSettings
from speculate.storage.request_log import RequestLog


def day(date: str) -> float:
    """Noon UTC of an ISO date, as a timestamp."""
    return float(calendar.timegm(time.strptime(f"{date} 12", "%Y-%m-%d %H")))


def row(model: str, date: str, edit: int, **extra: object) -> dict[str, object]:
    return {
        "outcome": "done",
        "final_source": "cloud",
        "route": "speculative",
        "edge_model": model,
        "finished_at": day(date),
        "edit_distance": edit,
        **extra,
    }


def test_corrections_per_edge_model_and_day() -> None:
    rows = [
        row("smollm2-135m", "2026-11-26", 40),
        row("smollm2-135m", "2026-11-26", 0),
        row("smollm2-135m", "2026-11-26", 20),
        row("gemma3-270m", "2026-11-27", 0),
        row("gemma3-270m", "2026-11-27", 10),
        row("smollm2-135m", "2026-11-26", 99, route="cloud"),  # no draft to correct
        row("smollm2-135m", "2026-11-26", 99, final_source="edge"),  # the cloud never came
    ]
    panel = {(p["edge model"], p["day"]): p for p in corrections(rows)}
    assert set(panel) == {("smollm2-135m", "2026-11-26"), ("gemma3-270m", "2026-11-27")}
    small = panel[("smollm2-135m", "2026-11-26")]
    assert small["answers"] == 3
    assert small["corrected"] == 2 / 3
    assert small["median edit"] == 20
    assert small["p90 edit"] == 40
    other = panel[("gemma3-270m", "2026-11-27")]
    assert (other["answers"], other["corrected"], other["median edit"]) == (2, 0.5, 5)


async def test_the_request_log_records_the_edge_model_and_old_logs_gain_the_column(
    tmp_path: Path,
) -> None:
    import sqlite3

    db = tmp_path / "log.db"
    with sqlite3.connect(db) as old:  # a log written before edge models were recorded
        old.execute(
            "CREATE TABLE requests (request_id TEXT PRIMARY KEY, finished_at REAL "
            "NOT NULL, mode TEXT NOT NULL, route TEXT, outcome TEXT NOT NULL, "
            "final_source TEXT, draft_first_ms REAL, cloud_first_ms REAL, final_ms "
            "REAL, prompt_tokens INTEGER, draft_tokens INTEGER, cloud_tokens INTEGER, "
            "edit_distance INTEGER, cost_usd REAL, cost_saved_usd REAL, error_code "
            "TEXT, prompt TEXT)"
        )
    log = RequestLog(db)
    summary = RunSummary(
        "r1", "speculative", "done", "cloud", stats={"edit_distance": 7}, edge_model="gemma3-270m"
    )
    await log.finished(
        SpeculateRequest([{"role": "user", "content": "hi"}], request_id="r1"), summary
    )
    log.close()
    (stored,) = load(db)
    assert stored["edge_model"] == "gemma3-270m"
    assert corrections([stored])[0]["edge model"] == "gemma3-270m"
    assert run_report(db, tmp_path / "plots", CostSettings(), fleets=[], requests_per_month=1) == 0
