"""The capacity suite's physical limit: a minimal ASGI app under the same uvicorn
settings as ``speculate serve`` that streams the same frames at the same rate, with
nothing else to do.

Its frames are pre-encoded copies of what speculate sends for one edge answer of the
fake model (start, one draft per word, commit, done), on the same routes: SSE on
``POST /v1/speculate``, WebSocket text frames on ``/v1/ws``.  What speculate holds as a
share of what this holds is the cost of everything speculate does per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from speculate.core.protocol import Commit, Done, Draft, Event, Start, encode_json, encode_sse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def events(tokens: int) -> list[Event]:
    """An edge answer's events as speculate sends them (the fake model's words)."""
    rid = "req_" + "0" * 32
    words = [(" " if i else "") + f"word{i}" for i in range(tokens)]
    text = "".join(words)
    stats = {
        "draft_first_ms": 100.0,
        "cloud_first_ms": None,
        "final_ms": 4000.0,
        "draft_tokens": tokens,
        "cloud_tokens": 0,
        "edit_distance": 0,
        "cost_usd": 0.0,
        "cost_saved_usd": 0.0,
    }
    start = Start(
        request_id=rid,
        seq=1,
        route="edge",
        reason="requested: edge only",
        edge_model="fake-edge",
        cloud_model=None,
        dropped_turns={"edge": 0, "cloud": 0},
    )
    drafts = [Draft(request_id=rid, seq=2 + i, text=w) for i, w in enumerate(words)]
    end = [
        Commit(request_id=rid, seq=tokens + 2, upto=len(text)),
        Done(request_id=rid, seq=tokens + 3, text=text, final_source="edge", stats=stats),
    ]
    return [start, *drafts, *end]


def sse_frames(tokens: int) -> list[bytes]:
    return [encode_sse(event) for event in events(tokens)]


def ws_frames(tokens: int) -> list[str]:
    return [encode_json(event) for event in events(tokens)]


def baseline_app(tps: float, tokens: int) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The app: each stream sends start at once, then a draft every 1/tps seconds on a
    fixed schedule (as the fake model produces its words), then commit and done.  A
    WebSocket carries one stream per message it receives.

    Its pace is kept with the loop's own timers, the cheapest an ASGI app has (a bare
    ``asyncio.sleep`` per frame, not anyio's, which looks up its backend on every
    call): the fake model paces its words with loop timers too, so neither side is
    charged for a pacing the other does not pay."""
    sse, ws = sse_frames(tokens), ws_frames(tokens)
    interval = 1 / tps

    def due(index: int, started: float) -> float:
        # start at once; word k (frame k) after k intervals; commit and done with the last
        return started + min(index, tokens) * interval

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http":
            while (await receive()).get("more_body"):
                pass  # the request body: read, not parsed
            if scope["path"] != "/v1/speculate":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"ok"})
                return
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            loop = asyncio.get_running_loop()
            started = loop.time()
            for index, frame in enumerate(sse):
                await asyncio.sleep(due(index, started) - loop.time())
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif scope["type"] == "websocket":
            await receive()  # connect
            await send({"type": "websocket.accept"})
            # One stream per request message, until the client leaves (as speculate's
            # socket serves one request after another).
            loop = asyncio.get_running_loop()
            while (await receive())["type"] != "websocket.disconnect":
                started = loop.time()
                for index, text in enumerate(ws):
                    await asyncio.sleep(due(index, started) - loop.time())
                    await send({"type": "websocket.send", "text": text})

    return app
