"""`speculate ask` as a person reads it: the answer ends its line, the figures are rounded,
and a key-protected server is reached with --api-key or $SPECULATE_API_KEY."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from speculate.cli.ask import duration, money
from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.settings import Settings
from tests.scripted import BookBackend, Script, ScriptBook
from tests.servers import serve_in_thread

ANSWER = "Sleep at the same time every night, for many"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    book = ScriptBook({}, Script(draft="Sleep early.", cloud=ANSWER))
    settings = Settings(
        server={"api_keys": ["k-123"], "rate_per_minute": 0},  # type: ignore[arg-type]
        store={"request_log": False},  # type: ignore[arg-type]
    )
    backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
    with serve_in_thread(create_app(settings, backends), settings) as base:
        yield base


def ask(
    url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "speculate.cli", "ask", "Tips?", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "TERM": "dumb", **(env or {})},
        check=False,
    )


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_the_answer_ends_its_line_and_figures_are_rounded(url: str, transport: str) -> None:
    result = ask(url, "--mode", "speculative", "--transport", transport, "--api-key", "k-123")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    closing = next(line for line in lines if "final from" in line)
    assert closing.startswith("final from cloud")  # not glued to the answer
    assert any(line.rstrip() == ANSWER for line in lines)
    assert not re.search(r"\d+\.\d{2,} ms", closing), closing  # no microseconds
    assert re.search(r"first draft \d+ ms", closing), closing


def test_the_key_comes_from_the_environment_and_its_absence_is_said(url: str) -> None:
    assert ask(url, "--transport", "sse", env={"SPECULATE_API_KEY": "k-123"}).returncode == 0
    for transport in ("sse", "ws"):
        refused = ask(url, "--transport", transport, env={"SPECULATE_API_KEY": ""})
        assert refused.returncode == 2
        # (a WebSocket refused before its handshake completes is a 403)
        assert "401" in refused.stdout or "403" in refused.stdout
        assert "Traceback" not in refused.stdout + refused.stderr


def test_an_unreachable_server_is_said_plainly() -> None:
    result = ask("http://127.0.0.1:9")
    assert result.returncode == 2
    assert "cannot reach the server at http://127.0.0.1:9" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_figures_as_a_person_reads_them() -> None:
    assert duration(398.716) == "399 ms"
    assert duration(1234.5) == "1.2 s"
    assert duration(None) == "–"
    assert money(0.0000123) == "$0.000012"
    assert money(0.5) == "$0.50"
    assert money(0) == "$0"
