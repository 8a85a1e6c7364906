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
