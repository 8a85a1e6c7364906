"""Pairs kept from real traffic (SmolLM2 edge, the stand-in cloud), exported for
fine-tuning with the command a user runs, and loaded with the datasets library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from speculate.client import stream_sse
from speculate.core.text import ShownText
from tests.servers import start_server

pytestmark = pytest.mark.slow

PROMPTS = [
    "Name three colours of the rainbow.",
    "Give me two tips for sleeping well.",
    "What is the capital of France?",
    "Say hello in French.",
]


def test_traffic_to_pairs_to_a_training_file(tmp_path: Path) -> None:
    db = tmp_path / "speculate.db"
    server = start_server(
        str(tmp_path), {"SPECULATE_STORE__KEEP_PAIRS": "true", "SPECULATE_STORE__PATH": str(db)}
    )
    try:

        async def traffic() -> None:
            private = "Write to ann@example.com about the meeting."
            for prompt in [*PROMPTS, private]:
                body = {
                    "messages": [{"role": "user", "content": prompt}],
                    "mode": "speculative",
                    "max_tokens": 32,
                }
                shown = ShownText()
                with anyio.fail_after(120):
                    async for event in stream_sse(server.url, body):
                        shown.apply(event)
                assert shown.done is not None

        anyio.run(traffic)
    finally:
        server.stop()
    out = tmp_path / "train.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "speculate.cli",
            "distill",
            "export",
            "--db",
            str(db),
            "--out",
            str(out),
            "--largest-first",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    print(result.stderr)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    # The four ordinary questions (the private one stays on the device: not sent, not kept).
    assert sorted(line["messages"][0]["content"] for line in lines) == sorted(PROMPTS)
    assert "ann@example.com" not in out.read_text()
    assert b"ann@example.com" not in db.read_bytes()
    import datasets  # in the dev extra: the loader fine-tuning tools use

    loaded = datasets.load_dataset("json", data_files=str(out), split="train")
    assert loaded.num_rows == len(PROMPTS)
    assert all(row["messages"][-1]["role"] == "assistant" for row in loaded)
