"""A socket's end: it cancels its tasks only when some still run (a cancel scope's
``cancel()`` formats the calling task's repr, too dear for every socket's end when
hundreds end together), and a socket dropped mid-answer still stops its forwarder."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest
import websockets

from speculate.bench.fake import FakeBackend
from speculate.bench.inprocess import serving
from speculate.client import ws_url
from speculate.engine.context import Backends
from speculate.server import ws


def ask(tokens: int) -> str:
    return json.dumps(
        {
            "type": "speculate",
            "messages": [{"role": "user", "content": "go"}],
            "mode": "edge",
            "max_tokens": tokens,
        }
    )


async def test_a_socket_cancels_its_tasks_only_while_some_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ended = [threading.Event(), threading.Event()]  # each socket's endpoint has returned
    endpoint = ws.websocket_endpoint

    async def recorded(websocket: Any) -> None:
        try:
            await endpoint(websocket)
        finally:
            next(e for e in ended if not e.is_set()).set()

    monkeypatch.setattr(ws, "websocket_endpoint", recorded)  # before the app is made
    from_sockets: list[object] = []  # cancellations asked by the socket's own code
    scope_class = type(anyio.CancelScope())
    cancel = scope_class.cancel

    def counted(self: Any, *args: Any) -> None:
        if sys._getframe(1).f_code.co_filename == ws.__file__:
            from_sockets.append(self)
        cancel(self, *args)

    monkeypatch.setattr(scope_class, "cancel", counted)
    backends = Backends(edge=FakeBackend("fake-edge", tokens_per_s=20.0))
    with serving(backends) as url:
        # An answer read to its end, then the socket closed: nothing runs, nothing to cancel.
        async with websockets.connect(ws_url(url)) as socket:
            await socket.send(ask(3))
            async for frame in socket:
                if json.loads(frame)["event"] == "done":
                    break
        assert await anyio.to_thread.run_sync(ended[0].wait, 10)
        assert from_sockets == []
        # Dropped mid-answer (200 tokens at 20/s: 10 s): its forwarder still waits for the
        # request's events, so the socket's end cancels it, and ends long before the answer.
        async with websockets.connect(ws_url(url)) as socket:
            await socket.send(ask(200))
            async for frame in socket:
                if json.loads(frame)["event"] == "draft":
                    break
        assert await anyio.to_thread.run_sync(ended[1].wait, 5)
        assert len(from_sockets) == 1
