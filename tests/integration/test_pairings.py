"""The second pairing (different tokenizers) and the terminal client."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from speculate.client import stream_ws
from speculate.core.text import ShownText
from tests.integration.test_streaming import greedy_cloud_answer
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PROMPT = "The three primary colours are"


@pytest.fixture(scope="module")
def gemma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        str(tmp_path_factory.mktemp("gemma")), None, "--config", str(CONFIGS / "gemma-cloud.yaml")
    )
    yield proc
    proc.stop()


def test_smollm2_draft_is_corrected_by_a_gemma_cloud(gemma_server: ServerProcess) -> None:
    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 40,
        "mode": "speculative",
    }

    async def main() -> tuple[ShownText, str]:
        shown = ShownText()
        with anyio.fail_after(120):
            async for event in stream_ws(gemma_server.url, body):
                shown.apply(event)
        return shown, await greedy_cloud_answer(gemma_server, PROMPT, 40)

    shown, expected = anyio.run(main)
    assert shown.done is not None
    assert shown.done.final_source == "cloud"
    assert shown.text == expected
    assert shown.done.stats["cloud_tokens"] > 0


def test_ask_prints_the_route_the_final_answer_and_timings(server: ServerProcess) -> None:
    for transport in ("ws", "sse"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "speculate.cli",
                "ask",
                "Say hi in five words.",
                "--url",
                server.url,
                "--max-tokens",
                "24",
                "--transport",
                transport,
                "--mode",
                "speculative",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200", "TERM": "dumb"},
        )
        assert result.returncode == 0, result.stderr
        assert "route speculative" in result.stdout
        assert "final from cloud" in result.stdout
        assert "first draft" in result.stdout
