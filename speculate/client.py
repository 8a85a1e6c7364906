"""Async clients for speculate's own streams (SSE and WebSocket).

Used by ``speculate ask``, the benchmark and the tests: each yields decoded events
in order; feed them to :class:`~speculate.core.text.ShownText` to rebuild the text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import websockets

from speculate.core.protocol import Event, SSEDecoder, StreamEnd, decode_event, ends


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def stream_sse(
    base_url: str,
    body: dict[str, Any],
    *,
    client: httpx.AsyncClient | None = None,
    api_key: str | None = None,
) -> AsyncIterator[Event]:
    """POST /v1/speculate and yield its events until the stream's last one."""
    own = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
    url = f"{base_url.rstrip('/')}/v1/speculate"
    try:
        async with http.stream("POST", url, json=body, headers=_auth(api_key)) as r:
            if r.status_code != 200:
                detail = (await r.aread()).decode("utf-8", "replace")
                raise httpx.HTTPStatusError(
                    f"HTTP {r.status_code}: {detail}", request=r.request, response=r
                )
            decoder = SSEDecoder()
            async for chunk in r.aiter_text():
                for message in decoder.feed(chunk):
                    event = decode_event(message.data)
                    yield event
                    if ends(event):
                        return
    finally:
        if own:
            await http.aclose()


def ws_url(base_url: str) -> str:
    return base_url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + "/v1/ws"


async def stream_ws(
    base_url: str,
    body: dict[str, Any],
    *,
    through_refinement: bool = False,
    api_key: str | None = None,
) -> AsyncIterator[Event]:
    """Send one ``speculate`` message over /v1/ws and yield that request's events.

    ``through_refinement``: after ``queued``, stay for the refinement (the provisional
    ``done`` is followed, whenever the cloud is back, by ``patch`` and the final one)."""
    async with websockets.connect(
        ws_url(base_url), compression=None, additional_headers=_auth(api_key)
    ) as socket:
        await socket.send(json.dumps({"type": "speculate", **body}))
        end = StreamEnd()
        async for frame in socket:
            event = decode_event(str(frame))
            yield event
            kind = end.see(event)
            if kind == "final" or (kind == "provisional" and not through_refinement):
                return
