"""How the server process runs: the heap settled once it has started."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import uvicorn

from speculate.server import run
from speculate.server.run import DrainingServer


def test_settling_the_heap_freezes_what_start_up_built_and_spaces_young_collections() -> None:
    # In a child process: the collector's settings are the whole process's.
    code = (
        "import gc, json\n"
        "from speculate.server.run import settle_heap\n"
        "before = gc.get_threshold()\n"
        "settle_heap()\n"
        "print(json.dumps([gc.get_freeze_count(), before, gc.get_threshold()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    frozen, before, after = json.loads(out.stdout)
    assert frozen > 10_000  # the modules the server imported, at least
    assert after == [run.YOUNG_COLLECTION_EVERY, run.MIDDLE_COLLECTION_EVERY, before[2]]


def test_the_gil_goes_to_a_waiting_thread_after_a_fifth_of_a_millisecond() -> None:
    code = (
        "import sys\n"
        "from speculate.server.run import hand_over_the_gil_sooner\n"
        "before = sys.getswitchinterval()\n"
        "hand_over_the_gil_sooner()\n"
        "print(before, sys.getswitchinterval())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    assert before == pytest.approx(0.005)  # CPython's default
    assert after == pytest.approx(run.GIL_SWITCH_INTERVAL_S)
    assert after < 0.001


async def test_a_started_server_settles_its_heap_and_threads_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled: list[bool] = []
    switched: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no request is made")

    config = uvicorn.Config(app, port=0, lifespan="off", log_config=None)
    config.load()
    server = DrainingServer(config)
    server.lifespan = config.lifespan_class(config)  # what uvicorn's serve() sets up
    monkeypatch.setattr(run, "settle_heap", lambda: settled.append(server.started))
    monkeypatch.setattr(run, "hand_over_the_gil_sooner", lambda: switched.append(server.started))
    await server.startup()
    try:
        assert settled == switched == [True]  # after start-up, once
    finally:
        await server.shutdown()
