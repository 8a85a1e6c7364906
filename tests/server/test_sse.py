"""The SSE response's own send path (the transport itself is tested end to end)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from sse_starlette import EventSourceResponse

from speculate.server.sse import _EventStream


def test_the_per_write_hook_it_overrides_is_still_sse_starlettes() -> None:
    # If an upgrade renamed it, the override would silently stop applying.
    assert "_send_with_timeout" in vars(EventSourceResponse)
    assert "_send_with_timeout" in vars(_EventStream)


async def _frames() -> Any:
    yield b"data: x\n\n"


async def test_without_a_send_timeout_writes_go_straight_to_send() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    response = _EventStream(_frames(), ping=0)
    message = {"type": "http.response.body", "body": b"data: x\n\n", "more_body": True}
    await response._send_with_timeout(send, message)
    assert sent == [message]


async def test_with_a_send_timeout_a_stuck_write_still_times_out() -> None:
    async def stuck(message: Any) -> None:
        await anyio.sleep_forever()

    response = _EventStream(_frames(), ping=0, send_timeout=0.01)
    message = {"type": "http.response.body", "body": b"", "more_body": True}
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        await response._send_with_timeout(stuck, message)


class Client:
    """The ASGI side of one response: what it sent, and a client that leaves on cue."""

    def __init__(self, pings_before_leaving: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.pings_before_leaving = pings_before_leaving
        self.leave = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
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
        await _EventStream(quiet(), ping=0.01)(SCOPE, client.receive, client.send)
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
        await _EventStream(two(), ping=0)(SCOPE, client.receive, client.send)
    bodies = [m.get("body") for m in client.sent[1:]]
    assert bodies == [b"data: 1\r\n\r\n", b"data: 2\r\n\r\n", b""]
    assert client.sent[-1]["more_body"] is False


async def test_a_failing_send_raises_its_own_error_not_a_group() -> None:
    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the connection is gone")

    client = Client()
    with anyio.fail_after(10), pytest.raises(OSError, match="connection is gone"):
        await _EventStream(_frames(), ping=0)(SCOPE, client.receive, send)
