"""Router suite: time per routing decision and accuracy on the labelled prompt sets.

A decision is the whole of ``Router.decide`` for mode ``auto``: privacy scan,
complexity score, momentum.  Each prompt is decided ``repeat`` times in a row and
the per-call time taken from the batch (timer resolution would swamp one call).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from speculate.policy.router import Router

DATA = Path(__file__).resolve().parent / "data"
SETS = ("routing_prompts.jsonl", "routing_heldout.jsonl")


def _rows(name: str) -> list[dict[str, str]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def run(repeat: int = 200) -> list[dict[str, Any]]:
    router = Router()
    results = []
    for name in SETS:
        rows = _rows(name)
        per_call_us, right = [], 0
        for row in rows:
            messages = [{"role": "user", "content": row["prompt"]}]
            started = time.perf_counter()
            for _ in range(repeat):
                decision = router.decide("auto", messages, "up")
            per_call_us.append((time.perf_counter() - started) / repeat * 1e6)
            right += (decision.route == "edge") == (row["label"] == "edge")
        per_call_us.sort()
        results.append(
            {
                "prompt_set": name.removesuffix(".jsonl"),
                "prompts": len(rows),
                "accuracy": round(right / len(rows), 3),
                "decision_us_median": round(statistics.median(per_call_us), 1),
                "decision_us_p99": round(per_call_us[min(len(rows) - 1, int(len(rows) * 0.99))], 1),
            }
        )
    return results
