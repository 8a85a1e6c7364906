"""A socket's end: it cancels its tasks only when some still run (tests/cancels.py says
why), and a socket dropped mid-answer still stops its forwarder."""

from __future__ import annotations

import json
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
from tests.cancels import count_cancels


async def ask_until(url: str, tokens: int, event: str) -> None:
    """Ask for an edge answer of ``tokens`` words, read up to its first ``event``, and
    close the socket."""
    async with websockets.connect(ws_url(url)) as socket:
        body = {"messages": [{"role": "user", "content": "go"}], "max_tokens": tokens}
        await socket.send(json.dumps({"type": "speculate", "mode": "edge", **body}))
        async for frame in socket:
            if json.loads(frame)["event"] == event:
                return


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
    from_sockets = count_cancels(monkeypatch, called_from=ws.__file__)
    backends = Backends(edge=FakeBackend("fake-edge", tokens_per_s=20.0))
    with serving(backends) as url:
        # An answer read to its end, then the socket closed: nothing runs, nothing to cancel.
        await ask_until(url, 3, "done")
        assert await anyio.to_thread.run_sync(ended[0].wait, 10)
        assert from_sockets == []
        # Dropped mid-answer (200 tokens at 20/s: 10 s): its forwarder still waits for the
        # request's events, so the socket's end cancels it, and ends long before the answer.
        await ask_until(url, 200, "draft")
        assert await anyio.to_thread.run_sync(ended[1].wait, 5)
        assert len(from_sockets) == 1
