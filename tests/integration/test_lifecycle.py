"""Start-up, shutdown and failure of the whole server process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import psutil
import pytest

from speculate.backends.standin import free_port
from speculate.client import stream_sse
from speculate.core.protocol import Error
from speculate.core.text import ShownText
from tests.servers import start_server

pytestmark = pytest.mark.slow

BODY = {
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 24,
    "mode": "speculative",
}


@pytest.mark.parametrize("model", ["llama-70b", None], ids=["model-set", "model-unknown"])
def test_unreachable_cloud_leaves_the_draft_within_the_connect_timeout(
    tmp_path: Path, model: str | None
) -> None:
    closed_port = free_port()  # nothing listens here
    env = {
        "SPECULATE_CLOUD__BASE_URL": f"http://127.0.0.1:{closed_port}/v1",
        "SPECULATE_CLOUD__CONNECT_TIMEOUT_S": "2",
    }
    if model is not None:
        env["SPECULATE_CLOUD__MODEL"] = model
    # Without a configured model the server asks the cloud at start-up; unreachable, it
    # must start anyway.
    server = start_server(str(tmp_path), env)
    try:

        async def main() -> tuple[ShownText, list[Error], float]:
            shown, errors = ShownText(), []
            started = time.perf_counter()
            error_after = float("inf")
            with anyio.fail_after(60):
                async for event in stream_sse(server.url, BODY):
                    shown.apply(event)
                    if isinstance(event, Error):
                        errors.append(event)
                        error_after = min(error_after, time.perf_counter() - started)
            return shown, errors, error_after

        shown, errors, error_after = anyio.run(main)
    finally:
        server.stop()
    # The draft stands, provisionally: the refinement is queued for when the cloud is back.
    assert shown.done is None
    assert shown.provisional is not None
    assert shown.provisional.final_source == "edge"
    assert shown.provisional.stats["queued"]
    assert shown.text  # the draft stands
    assert [(e.source, e.code, e.fatal) for e in errors] == [("cloud", "cloud_unreachable", False)]
    # A refused connection fails at once: with its two retries (backoff at most 0.2 s and
    # 0.4 s) the client hears of it inside the 2 s connect timeout.
    assert error_after < 2.0, f"the cloud error came after {error_after:.2f} s"
    assert shown.provisional.stats["cloud_first_ms"] is None


def _children(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_no_orphan_survives_sigkill_of_the_server(tmp_path: Path) -> None:
    server = start_server(str(tmp_path))
    children = _children(server.process.pid)
    assert any("speculate.backends.standin_app" in " ".join(c.cmdline()) for c in children)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    _gone, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], f"orphans left behind: {alive}"


def test_sigterm_stops_the_standin_too(tmp_path: Path) -> None:
    server = start_server(str(tmp_path))
    children = _children(server.process.pid)
    server.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal after its graceful shutdown, hence -SIGTERM.
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log()
    _gone, alive = psutil.wait_procs(children, timeout=15)
    assert alive == []


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "is not downloaded yet"), (b"garbage" * 100, "does not match its SHA-256")],
)
def test_missing_or_corrupt_model_stops_start_up_with_a_fix(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    if content is not None:
        (models_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "speculate.cli", "serve", "--port", str(free_port())],
        env={**os.environ, "SPECULATE_MODELS_DIR": str(models_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "speculate models pull" in result.stderr


def _stream_in_thread(
    url: str, body: dict[str, object]
) -> tuple[threading.Thread, dict[str, object]]:
    state: dict[str, object] = {"first": threading.Event()}

    def run() -> None:
        async def main() -> None:
            shown = ShownText()
            with anyio.fail_after(60):
                async for event in stream_sse(url, body):
                    shown.apply(event)
                    if event.type == "draft":
                        state["first"].set()  # type: ignore[attr-defined]
            state["shown"] = shown
            state["ended_at"] = time.monotonic()

        anyio.run(main)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, state


@pytest.mark.parametrize(
    ("grace", "max_tokens", "outcome"), [("1", 2000, "server_shutdown"), ("30", 16, "done")]
)
def test_sigterm_drains_streams(tmp_path: Path, grace: str, max_tokens: int, outcome: str) -> None:
    server = start_server(
        str(tmp_path),
        {"SPECULATE_CLOUD__ENABLED": "false", "SPECULATE_SERVER__SHUTDOWN_GRACE_S": grace},
    )
    prompt = "Write a long, detailed story about a dragon who learns to fly."
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    thread, state = _stream_in_thread(server.url, body)
    assert state["first"].wait(30)  # type: ignore[attr-defined]
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    thread.join(timeout=60)
    shown = state["shown"]
    assert isinstance(shown, ShownText)
    if outcome == "done":
        assert shown.done is not None  # finished inside the grace period
    else:
        assert shown.fatal is not None
        assert (shown.fatal.code, shown.fatal.source) == ("server_shutdown", "server")
        assert float(str(state["ended_at"])) - signalled < float(grace) + 3
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log()
