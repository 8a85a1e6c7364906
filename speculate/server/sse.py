"""``POST /v1/speculate`` and ``GET /v1/speculate/{id}/events``: the SSE transport.

One task group per response (sse-starlette's): the sender, the keep-alive pings and a
``receive()`` listener that notices the client leaving.  When the client leaves, the
group is cancelled; the request's last reader is gone and so is the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Send

from speculate.core.protocol import encode_sse
from speculate.engine.eventlog import EventLog
from speculate.errors import BadRequest, Conflict, NotFound
from speculate.server.errors import client_address, read_json
from speculate.server.limits import admit, fit_to_windows
from speculate.server.schemas import parse_speculate
from speculate.server.state import AppState

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _frames(log: EventLog, after: int) -> AsyncIterator[bytes]:
    """What has arrived by each wake-up, as one write: a reader that fell behind catches
    up in one send, not one per event."""
    async for batch in log.batches(after):
        yield b"".join(map(encode_sse, batch))


async def _reading(
    state: AppState, request_id: str, frames: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """``frames``, counting as the request's reader while the response sends them: a
    client gone cancels the response, which ends this and so the reading at once."""
    async with state.jobs.following(request_id):
        async for frame in frames:
            yield frame


async def speculate(request: Request) -> Response:
    state: AppState = request.app.state.speculate
    limits = state.settings.server
    job = parse_speculate(await read_json(request, limits.ws_max_message_bytes), limits)
    client = client_address(request)
    admit(state, client)
    job = await fit_to_windows(state, replace(job, client=client))
    if "respond-async" in request.headers.get("prefer", ""):
        # Detached: the request outlives this response; follow it with EventSource.
        state.jobs.start(job)
        events = f"/v1/speculate/{job.request_id}/events"
        return JSONResponse(
            {"request_id": job.request_id, "events": events},
            status_code=202,
            headers={"Location": events, "X-Request-ID": job.request_id},
        )
    # Attached: the request ends when this response's reader goes away.
    log = state.jobs.start(job, attached=True)
    return event_stream(state, _frames(log, 0), job.request_id, {"X-Request-ID": job.request_id})


class _EventStream(EventSourceResponse):
    """sse-starlette's response, sending each write straight on when no send timeout is
    set (its default path opens a cancel scope per write, a fifth of a stream's CPU)."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


def event_stream(
    state: AppState,
    frames: AsyncIterator[Any],
    request_id: str,
    headers: dict[str, str] | None = None,
) -> EventSourceResponse:
    """An SSE response that counts as the request's reader while it is open.

    On SIGTERM sse-starlette would cut every stream at once; the shutdown grace lets
    our drain end each stream with its final event instead."""
    return _EventStream(
        _reading(state, request_id, frames),
        ping=state.settings.server.sse_ping_s,
        headers=SSE_HEADERS | (headers or {}),
        shutdown_grace_period=state.settings.server.shutdown_grace_s + 1,
    )


async def follow(request: Request) -> Response:
    """Replay what was missed (``Last-Event-ID`` or ``?after=N``), then go on live."""
    state: AppState = request.app.state.speculate
    request_id = request.path_params["request_id"]
    log = state.requests.get(request_id)
    if log is None:
        raise NotFound(f"no request {request_id!r} is known")
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    try:
        after = int(raw)
    except ValueError:
        raise BadRequest(f"after / Last-Event-ID must be an integer, not {raw!r}") from None
    if after < 0:
        raise BadRequest("after / Last-Event-ID must not be negative")
    return event_stream(state, _frames(log, after), request_id)


async def cancel(request: Request) -> Response:
    """``DELETE /v1/requests/{id}``: stop a running request (its stream ends ``cancelled``)."""
    state: AppState = request.app.state.speculate
    request_id = request.path_params["request_id"]
    if state.requests.get(request_id) is None:
        raise NotFound(f"no request {request_id!r} is known")
    if not state.jobs.cancel(request_id):
        raise Conflict(f"request {request_id!r} is not running")
    return JSONResponse({"request_id": request_id, "cancelled": True}, status_code=202)
