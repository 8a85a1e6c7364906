"""``POST /v1/speculate`` and ``GET /v1/speculate/{id}/events``: the SSE transport.

One task group per response (sse-starlette's): the orchestrator, the sender, the
keep-alive pings and a ``receive()`` listener that notices the client leaving.  When
the client leaves, the group is cancelled and so is the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from typing import Any

import anyio
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speculate.core.protocol import encode_sse
from speculate.engine.eventlog import EventLog
from speculate.errors import BadRequest, Conflict, NotFound
from speculate.server.errors import client_address, read_json
from speculate.server.limits import admit, fit_to_windows
from speculate.server.schemas import parse_speculate
from speculate.server.state import AppState

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _frames(log: EventLog, after: int) -> AsyncIterator[bytes]:
    async for event in log.follow(after):
        yield encode_sse(event)


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


def event_stream(
    state: AppState,
    frames: AsyncIterator[Any],
    request_id: str,
    headers: dict[str, str] | None = None,
) -> EventSourceResponse:
    """An SSE response that counts as the request's reader while it is open.

    On SIGTERM sse-starlette would cut every stream at once; the shutdown grace lets
    our drain end each stream with its final event instead."""
    return EventSourceResponse(
        frames,
        ping=state.settings.server.sse_ping_s,
        data_sender_callable=holding(state, request_id),
        headers=SSE_HEADERS | (headers or {}),
        shutdown_grace_period=state.settings.server.shutdown_grace_s + 1,
    )


def holding(state: AppState, request_id: str) -> Callable[[], Coroutine[None, None, None]]:
    """A task for the response's task group that counts as the request's reader until
    the group ends (stream finished or client gone: sse-starlette's receive() listener)."""

    async def hold() -> None:
        async with state.jobs.following(request_id):
            await anyio.sleep_forever()

    return hold


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
