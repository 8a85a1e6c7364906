"""A stand-in that dies mid-stream: the stream ends with the draft and a queued
refinement, the child is reaped and restarted, /readyz says the cloud is down meanwhile,
the circuit closes when it is back and the interrupted request reaches its final text."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from speculate.client import stream_sse
from speculate.core.protocol import Error
from speculate.core.text import ShownText
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.slow


def standin_of(server: ServerProcess) -> psutil.Process:
    children = psutil.Process(server.process.pid).children(recursive=True)
    return next(c for c in children if "speculate.backends.standin_app" in " ".join(c.cmdline()))


def wait_for(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)  # another process offers no event to wait on: bounded poll


def test_a_killed_standin_is_reaped_restarted_and_the_request_completes(tmp_path: Path) -> None:
    server = start_server(
        str(tmp_path),
        {
            # The first restart 10 s after the crash: a window to see the cloud down (the
            # edge's answer may take longer than that on a slow machine, so it is looked at
            # as soon as the stream reports the cloud's failure).
            "SPECULATE_CLOUD__STANDIN__RESTART_BASE_S": "10",
            "SPECULATE_CLOUD__CIRCUIT_PROBE_BASE_S": "0.2",
            "SPECULATE_CLOUD__CIRCUIT_PROBE_CAP_S": "1",
        },
    )
    try:
        child = standin_of(server)
        body = {
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
            "mode": "speculative",
            "max_tokens": 200,
        }
        shown, errors = ShownText(), []
        killed: list[float] = []
        while_down: list[httpx.Response] = []

        async def readiness_once_restarting(client: httpx.AsyncClient) -> httpx.Response:
            # The supervisor notices the exit as the stream notices the dropped answer,
            # in either order: poll its view, bounded well inside the restart's delay.
            with anyio.fail_after(5):
                while True:
                    ready = await client.get(f"{server.url}/readyz")
                    if ready.json()["cloud"]["standin_state"] == "restarting":
                        return ready
                    await anyio.sleep(0.05)

        async def ask() -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                with anyio.fail_after(120):
                    async for event in stream_sse(server.url, body):
                        shown.apply(event)
                        if isinstance(event, Error):
                            errors.append(event)
                            if event.source == "cloud" and not while_down:
                                while_down.append(await readiness_once_restarting(client))
                        elif event.type == "draft" and not killed:
                            os.kill(child.pid, signal.SIGKILL)  # mid-stream, as in the field
                            killed.append(time.monotonic())

        anyio.run(ask)
        killed_at = killed[0]
        assert shown.provisional is not None  # the draft stands, the refinement is queued
        assert shown.provisional.final_source == "edge"
        assert [e.code for e in errors if e.source == "cloud"], errors
        request_id = shown.provisional.request_id
        result = httpx.get(f"{server.url}/v1/requests/{request_id}", timeout=10).json()
        assert result["state"] == "queued"  # a final state for now, not "running"

        # Reaped at once: no zombie left behind.
        wait_for(lambda: not psutil.pid_exists(child.pid), 10, "the dead child to be reaped")
        (ready,) = while_down
        assert ready.status_code == 200  # the edge still serves
        assert ready.json()["cloud"]["state"] == "down"

        def back() -> bool:
            cloud = httpx.get(f"{server.url}/readyz", timeout=10).json()["cloud"]
            return bool(cloud["state"] == "up" and cloud["standin_restarts"] == 1)

        wait_for(back, 120, "the stand-in to come back")
        print(f"\nthe stand-in was back {time.monotonic() - killed_at:.1f} s after the kill")
        assert standin_of(server).pid != child.pid

        def refined() -> bool:
            result = httpx.get(f"{server.url}/v1/requests/{request_id}", timeout=10).json()
            return bool(result["state"] == "done")

        wait_for(refined, 120, "the queued refinement to land")
        final = httpx.get(f"{server.url}/v1/requests/{request_id}", timeout=10).json()
        assert final["final_source"] == "cloud"
        assert final["text"]
    finally:
        server.stop()
    log = server.log()
    assert "the cloud stand-in exited with code -9; restarting it" in log
    assert "restarting the cloud stand-in in 10.0 s (attempt 1 of 6)" in log
    assert "the cloud stand-in is back at" in log
