"""The SSE response's own send path (the transport itself is tested end to end)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sse_starlette import ServerSentEvent
from starlette.middleware.cors import CORSMiddleware

from speculate.server import create_app
from speculate.server.auth import ApiKeys
from speculate.server.direct import DIRECT_SEND
from speculate.server.headers import SecurityHeaders
from speculate.server.hosts import HostGuard
from speculate.server.sse import _EventStream
from speculate.settings import Settings
from tests.cancels import count_cancels


async def _frames() -> Any:
    yield b"data: x\n\n"


class Reader:
    """Stands in for ``Jobs.following``: records when the response counts as a reader."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def __aenter__(self) -> None:
        self.log.append("reading")

    async def __aexit__(self, *exc: object) -> None:
        self.log.append("left")


class Client:
    """The ASGI side of one response: what it sent, and a client that leaves on cue."""

    def __init__(self, pings_before_leaving: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.pings_before_leaving = pings_before_leaving
        self.leave = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Any) -> None:
        self.sent.append(message)
        if self.pings_before_leaving and len(self.pings()) >= self.pings_before_leaving:
            self.leave.set()

    def pings(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m.get("body", b"").startswith(b":")]


SCOPE = {"type": "http", "method": "POST"}


async def test_a_quiet_stream_is_kept_alive_by_pings_until_the_client_leaves() -> None:
    closed = anyio.Event()

    async def quiet() -> Any:
        try:
            yield b"data: first\r\n\r\n"
            await anyio.sleep_forever()  # a request that says nothing for a long while
        finally:
            closed.set()

    client = Client(pings_before_leaving=3)
    with anyio.fail_after(10):
        await _EventStream(quiet(), nullcontext(), ping=0.01)(SCOPE, client.receive, client.send)
        await closed.wait()  # leaving ended the stream (and so the request's reading)
    assert client.sent[0]["type"] == "http.response.start"
    assert client.sent[1]["body"] == b"data: first\r\n\r\n"
    assert client.pings() == [b": ping\r\n\r\n"] * 3


async def test_a_stream_that_ends_stops_listening_for_the_client() -> None:
    async def two() -> Any:
        yield b"data: 1\r\n\r\n"
        yield b"data: 2\r\n\r\n"

    client = Client()  # never leaves
    with anyio.fail_after(10):
        await _EventStream(two(), nullcontext(), ping=0)(SCOPE, client.receive, client.send)
    bodies = [m.get("body") for m in client.sent[1:]]
    assert bodies == [b"data: 1\r\n\r\n", b"data: 2\r\n\r\n", b""]
    assert client.sent[-1]["more_body"] is False


class Server(Client):
    """A server as uvicorn is: a waiting ``receive()`` hears ``http.disconnect`` as soon
    as the response is complete."""

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message.get("more_body") is False:
            self.leave.set()


async def test_a_stream_whose_server_ends_the_listening_ends_without_a_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only a client gone mid-stream needs a cancellation (tests/cancels.py says why).
    cancelled = count_cancels(monkeypatch)

    async def two() -> Any:
        yield b"data: 1\r\n\r\n"
        yield b"data: 2\r\n\r\n"

    server = Server()
    with anyio.fail_after(10):
        await _EventStream(two(), nullcontext(), ping=0)(SCOPE, server.receive, server.send)
        # The loop's next turn, when a listener still waiting would be cancelled.
        await anyio.lowlevel.checkpoint()
    assert [m.get("body") for m in server.sent[1:]] == [b"data: 1\r\n\r\n", b"data: 2\r\n\r\n", b""]
    assert cancelled == []


async def test_a_failing_send_raises_its_own_error_not_a_group() -> None:
    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the connection is gone")

    client = Client()
    with anyio.fail_after(10), pytest.raises(OSError, match="connection is gone"):
        await _EventStream(_frames(), nullcontext(), ping=0)(SCOPE, client.receive, send)


async def test_frames_go_out_as_they_come_and_other_items_are_framed_by_sse_starlette() -> None:
    async def mixed() -> Any:
        yield b"id: 1\r\ndata: {}\r\n\r\n"  # framed already: sent as it is
        yield ServerSentEvent(data="chunk", event="message")  # the OpenAI route's kind

    client = Client()
    with anyio.fail_after(10):
        await _EventStream(mixed(), nullcontext(), ping=0)(SCOPE, client.receive, client.send)
    bodies = [m["body"] for m in client.sent[1:]]
    assert bodies == [b"id: 1\r\ndata: {}\r\n\r\n", b"event: message\r\ndata: chunk\r\n\r\n", b""]


async def test_the_start_goes_through_the_middlewares_and_the_frames_go_past_them() -> None:
    async def two() -> Any:
        yield b"data: 1\r\n\r\n"
        yield b"data: 2\r\n\r\n"

    chain, server = Client(), Client(pings_before_leaving=1)  # the wrapped send, the raw one
    scope = SCOPE | {DIRECT_SEND: server.send}
    with anyio.fail_after(10):
        await _EventStream(two(), nullcontext(), ping=0)(scope, server.receive, chain.send)
    assert [m["type"] for m in chain.sent] == ["http.response.start"]
    assert [m.get("body") for m in server.sent] == [b"data: 1\r\n\r\n", b"data: 2\r\n\r\n", b""]


async def test_every_middleware_of_the_app_leaves_response_bodies_alone() -> None:
    # The frames' direct send is right only while no middleware changes or counts a
    # body: a new one that does must come here (and in front of the app, not in it).
    app = create_app(Settings())
    kinds = {m.cls for m in app.user_middleware}
    start_only = {HostGuard, SecurityHeaders, ApiKeys, CORSMiddleware}
    assert kinds <= start_only, f"not known to leave bodies alone: {kinds - start_only}"


async def test_the_response_counts_as_the_requests_reader_while_it_is_open() -> None:
    log: list[str] = []

    async def frames() -> Any:
        for n in range(2):
            log.append(f"frame {n}")
            yield b"data: x\r\n\r\n"

    client = Client()
    with anyio.fail_after(10):
        await _EventStream(frames(), Reader(log), ping=0)(SCOPE, client.receive, client.send)
    assert log == ["reading", "frame 0", "frame 1", "left"]


async def test_a_client_gone_mid_stream_stops_the_reading_and_closes_the_frames() -> None:
    log: list[str] = []

    async def endless() -> Any:
        try:
            while True:
                yield b"data: x\r\n\r\n"
                await anyio.sleep(0.001)
        finally:
            log.append("closed")

    client = Client()

    async def send(message: Any) -> None:
        await client.send(message)
        if len(client.sent) == 3:  # the headers and two frames: then the client leaves
            client.leave.set()

    with anyio.fail_after(10):
        await _EventStream(endless(), Reader(log), ping=0)(SCOPE, client.receive, send)
    assert log == ["reading", "closed", "left"]


async def test_a_failed_write_closes_the_frames_generator_before_its_error_goes_on() -> None:
    log: list[str] = []

    async def frames() -> Any:
        try:
            yield b"data: x\r\n\r\n"
            yield b"data: never\r\n\r\n"
        finally:
            log.append("closed")

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the connection is gone")

    client = Client()
    with anyio.fail_after(10), pytest.raises(OSError, match="connection is gone"):
        await _EventStream(frames(), Reader(log), ping=0)(SCOPE, client.receive, send)
    assert log == ["reading", "closed", "left"]
