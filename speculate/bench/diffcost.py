"""Suite 5: what the diff engine costs per cloud chunk, against difflib, same run.

For answers of 100, 1,000 and 3,000 words, a draft and a cloud answer that differ
in about one word in eight are streamed through a speculative
:class:`~speculate.core.session.Session` one cloud word at a time (the draft already
complete: the worst case for alignment).  The baseline recomputes a difflib word
diff of the old and new shown text on every chunk, which is what a naive server
would do.  The whole-answer cost is compared with the time a cloud model decoding
at ``--cloud-tps`` tokens/s (the guide's 20 ms/token = 50) takes to produce it.
"""

from __future__ import annotations

import difflib
import random
import re
import statistics
import time
from typing import Any

from speculate.core.session import Session

TOKENS_PER_WORD = 1.3


def texts(words: int, seed: int = 5) -> tuple[str, str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(400)]
    draft = [rng.choice(vocab) for _ in range(words)]
    cloud: list[str] = []
    for word in draft:
        roll = rng.random()
        if roll < 0.05:
            continue  # the cloud leaves a word out
        cloud.append(rng.choice(vocab) if roll < 0.10 else word)
        if roll > 0.96:
            cloud.append(rng.choice(vocab))  # ... or adds one
    return " ".join(draft), " ".join(cloud)


def _chunks(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


def measure(words: int, cloud_tps: float) -> dict[str, Any]:
    draft, cloud = texts(words)
    session = Session("bench", route="speculative", reason="", edge_model="e", cloud_model="c")
    session.start()
    session.receive_draft(draft, 0.0)
    session.flush(0.0)
    ours: list[float] = []
    for chunk in _chunks(cloud):
        started = time.perf_counter()
        session.receive_cloud(chunk, 0.0)
        ours.append(time.perf_counter() - started)
    started = time.perf_counter()
    session.cloud_finished(0.0)
    ours.append(time.perf_counter() - started)

    baseline: list[float] = []
    shown = draft.split()
    covered: list[str] = []
    for chunk in _chunks(cloud):
        covered.append(chunk.strip())
        target = covered + draft.split()[len(covered) :]
        started = time.perf_counter()
        difflib.SequenceMatcher(None, shown, target, autojunk=False).get_opcodes()
        baseline.append(time.perf_counter() - started)
        shown = target
    generate_s = len(cloud.split()) * TOKENS_PER_WORD / cloud_tps
    return {
        "words": words,
        "chunks": len(ours),
        "ours_median_us": round(statistics.median(ours) * 1e6, 1),
        "ours_p99_us": round(sorted(ours)[int(0.99 * (len(ours) - 1))] * 1e6, 1),
        "ours_total_ms": round(sum(ours) * 1000, 2),
        "difflib_median_us": round(statistics.median(baseline) * 1e6, 1),
        "difflib_total_ms": round(sum(baseline) * 1000, 2),
        "speedup_vs_difflib": round(sum(baseline) / sum(ours), 2),
        "share_of_generation": round(sum(ours) / generate_s, 5),
    }


def run(
    cloud_tps: float = 50.0, sizes: tuple[int, ...] = (100, 1000, 3000)
) -> list[dict[str, Any]]:
    return [measure(words, cloud_tps) for words in sizes]
