"""Offline mode against real servers: the circuit breaker with a cloud that is truly
unreachable and then comes back, refinements delivered late on a live WebSocket, and a
durable queue that survives ``kill -9`` and is processed exactly once."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from speculate.backends import models
from speculate.backends.standin import StandInServer, free_port
from speculate.client import stream_sse, stream_ws
from speculate.core.protocol import Error, Event, Queued, SSEDecoder, decode_event
from speculate.core.text import ShownText
from tests.counting_proxy import CountingProxy
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.slow

PROMPTS = ["Name a colour.", "Say something about cats.", "What is rain?"]
MAX_TOKENS = 24


def body(prompt: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    return {"messages": messages, "mode": "speculative", "max_tokens": MAX_TOKENS}


def offline_env(proxy_port: int) -> dict[str, str]:
    return {
        "SPECULATE_CLOUD__BASE_URL": f"http://127.0.0.1:{proxy_port}/v1",
        "SPECULATE_CLOUD__MODEL": "standin",
        "SPECULATE_CLOUD__CONNECT_TIMEOUT_S": "2",
        "SPECULATE_CLOUD__RETRIES": "0",
        "SPECULATE_CLOUD__CIRCUIT_FAILURES": "2",
        "SPECULATE_CLOUD__CIRCUIT_PROBE_BASE_S": "0.2",
        "SPECULATE_CLOUD__CIRCUIT_PROBE_CAP_S": "1",
        "SPECULATE_STORE__QUEUE_POLL_S": "0.5",
    }


class Cloud:
    """The llama_cpp.server stand-in behind a counting proxy on a fixed port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.standin: StandInServer | None = None
        self.proxy: CountingProxy | None = None

    async def start(self) -> None:
        # Started from the main thread: the stand-in dies with the thread that forked it.
        standin = StandInServer(models.resolve("smollm2-135m"), alias="standin", n_threads=1)
        await standin.start()
        self.standin = standin
        self.proxy = CountingProxy(self.port, standin.port)

    @property
    def completions(self) -> int:
        return self.proxy.completions if self.proxy else 0

    def greedy(self, prompt: str) -> str:
        assert self.standin is not None
        response = httpx.post(
            f"{self.standin.base_url}/chat/completions",
            json={
                "model": "standin",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            },
            timeout=60,
        )
        return str(response.json()["choices"][0]["message"]["content"])

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.standin is not None:
            anyio.run(self.standin.stop)


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    cloud = Cloud(free_port())
    yield cloud
    cloud.stop()


def readyz(server: ServerProcess) -> dict[str, Any]:
    return dict(httpx.get(f"{server.url}/readyz", timeout=10).json())


def check_queued(events: list[Event]) -> ShownText:
    shown = ShownText()
    for event in events:
        shown.apply(event)
    assert shown.provisional is not None
    assert shown.provisional.final_source == "edge"
    assert shown.committed == 0  # nothing committed: the refinement may change any of it
    assert isinstance(events[-2], Queued)
    return shown


def test_circuit_opens_then_refinements_arrive_on_the_live_websocket(
    tmp_path: Path, cloud: Cloud
) -> None:
    server = start_server(str(tmp_path), offline_env(cloud.port))
    try:

        async def main() -> list[list[Event]]:
            streams: list[list[Event]] = [[] for _ in PROMPTS]
            provisional = [anyio.Event() for _ in PROMPTS]

            async def ask(index: int) -> None:
                async for event in stream_ws(
                    server.url, body(PROMPTS[index]), through_refinement=True
                ):
                    streams[index].append(event)
                    if event.type == "done":
                        provisional[index].set()  # the first done is the provisional one

            with anyio.fail_after(240):
                async with anyio.create_task_group() as group:
                    for index in range(2):  # two transient failures open the circuit
                        group.start_soon(ask, index)
                        await provisional[index].wait()
                    state = readyz(server)["cloud"]
                    assert state["circuit"] in ("open", "half_open"), state
                    group.start_soon(ask, 2)  # the circuit is open: edge at once, queued
                    await provisional[2].wait()
                    for stream in streams:
                        check_queued(stream)
                    await cloud.start()  # the cloud comes back
            return streams

        streams = anyio.run(main)
        first, third = streams[0], streams[2]
        errors = [e for e in first if isinstance(e, Error)]
        assert [(e.code, e.fatal) for e in errors] == [("cloud_unreachable", False)]
        assert not [e for e in third if isinstance(e, Error)]  # no timeout waited for
        assert "circuit is open" in third[0].fields()["reason"]
        for prompt, stream in zip(PROMPTS, streams, strict=True):
            shown = ShownText()
            for event in stream:
                shown.apply(event)  # seq continues without a gap after the provisional done
            assert shown.done is not None
            assert shown.done.final_source == "cloud"
            assert shown.done.stats["refined"] is True
            assert shown.text == cloud.greedy(prompt)
            result = httpx.get(f"{server.url}/v1/requests/{stream[0].request_id}").json()
            assert (result["state"], result["text"]) == ("done", shown.text)
        state = readyz(server)
        assert state["cloud"]["circuit"] == "closed"
        assert state["queue"]["done"] == 3
        assert "pending" not in state["queue"]
        assert cloud.completions == 3
    finally:
        server.stop()


def test_queue_survives_kill_9_and_each_refinement_runs_exactly_once(
    tmp_path: Path, cloud: Cloud
) -> None:
    env = offline_env(cloud.port)
    server = start_server(str(tmp_path), env)

    async def queue_all() -> list[list[Event]]:
        streams = []
        with anyio.fail_after(120):
            for prompt in PROMPTS:
                streams.append([event async for event in stream_sse(server.url, body(prompt))])
        return streams

    streams = anyio.run(queue_all)
    for stream in streams:
        check_queued(stream)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    with sqlite3.connect(server.db_path) as db:
        pending = db.execute("SELECT COUNT(*) FROM refinements WHERE status = 'pending'")
        assert pending.fetchone()[0] == len(PROMPTS)

    anyio.run(cloud.start)
    restarted = start_server(str(tmp_path), {**env, "SPECULATE_STORE__PATH": server.db_path})
    try:

        async def follow(stream: list[Event]) -> list[Event]:
            request_id, after = stream[0].request_id, stream[-1].seq
            url = f"{restarted.url}/v1/speculate/{request_id}/events?after={after}"
            late: list[Event] = []
            timeout = httpx.Timeout(10, read=None)
            async with (
                httpx.AsyncClient(timeout=timeout) as client,
                client.stream("GET", url) as response,
            ):
                decoder = SSEDecoder()
                async for chunk in response.aiter_text():
                    for message in decoder.feed(chunk):
                        late.append(decode_event(message.data))
                    if late and late[-1].type == "done":
                        return late
            return late

        async def main() -> list[list[Event]]:
            with anyio.fail_after(180):
                return [await follow(stream) for stream in streams]

        for prompt, stream, late in zip(PROMPTS, streams, anyio.run(main), strict=True):
            shown = ShownText()
            for event in stream + late:
                shown.apply(event)
            assert shown.done is not None
            assert shown.done.final_source == "cloud"
            assert shown.text == cloud.greedy(prompt)
        assert cloud.completions == len(PROMPTS)
        with sqlite3.connect(server.db_path) as db:
            rows = db.execute("SELECT status, attempts FROM refinements").fetchall()
        assert rows == [("done", 1)] * len(PROMPTS)
    finally:
        restarted.stop()
    # A further restart finds nothing to do: no refinement runs twice.
    again = start_server(str(tmp_path), {**env, "SPECULATE_STORE__PATH": server.db_path})
    try:
        queue = readyz(again)["queue"]
        assert queue == {"done": len(PROMPTS), "cached_answers": len(PROMPTS)}
        result = httpx.get(f"{again.url}/v1/requests/{streams[0][0].request_id}").json()
        assert result["state"] == "done"
        assert result["final_source"] == "cloud"
    finally:
        again.stop()
    assert cloud.completions == len(PROMPTS)
