"""``POST /v1/speculate`` and ``GET /v1/speculate/{id}/events``: the SSE transport.

One task group per response: a task of its own writes the events, and the response's
task listens for the client leaving (and sends the keep-alive pings while it waits);
whichever ends first cancels the other.  When the client leaves, the request's last
reader is gone and so is the request.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from functools import partial
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.event import ensure_bytes
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from speculate.core.protocol import encode_sse
from speculate.engine.eventlog import EventLog
from speculate.errors import BadRequest, Conflict, NotFound, unwrapped
from speculate.server.direct import direct_send
from speculate.server.errors import client_address, read_json
from speculate.server.limits import admit, fit_to_windows
from speculate.server.schemas import parse_speculate
from speculate.server.state import AppState

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _LogFrames:
    """A request's events as SSE frames, from ``after`` on: at each wake-up, what has
    arrived meanwhile as one write (a reader that fell behind catches up in one send).

    Iterable as any response body; the response's writer calls :meth:`write` instead, a
    loop with no generators between it and the log (two frames fewer to resume per event)."""

    def __init__(self, log: EventLog, after: int) -> None:
        self.log, self.after = log, max(0, after)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for batch in self.log.batches(self.after):
            yield b"".join(map(encode_sse, batch))

    async def write(self, send: Send) -> None:
        log, sent = self.log, self.after
        while True:
            batch, over = log.take(sent)
            if batch:
                sent += len(batch)
                body = b"".join(map(encode_sse, batch))
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if over:
                return
            if sent == len(log.events):  # (more may have come while this was written)
                await log.changed()


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
    await state.jobs.first_step(log)
    return event_stream(state, _LogFrames(log, 0), job.request_id, {"X-Request-ID": job.request_id})


class _EventStream(EventSourceResponse):
    """sse-starlette's response (its headers, framing, pings, HEAD answer) run as two
    tasks instead of its four, counting as the request's reader while it is open.

    Its pings and its shutdown watcher each hold a task for the whole stream: the
    pings are sent by the task that waits for the client to leave (it is idle anyway),
    and shutdown ends every stream through the requests' own drain (each gets its
    final event).  Each frame goes to ``send`` as it comes: the event frames are bytes
    already, and the response takes no send timeout (none was ever set here; the
    library's per-write path opened a cancel scope, encoded and logged every write)."""

    def __init__(
        self,
        frames: AsyncIterable[Any],
        reader: AbstractAsyncContextManager[None],
        *,
        ping: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(frames, ping=ping, headers=headers)
        self._reader = reader
        # The ping and the last frame take turns; taking a free lock yields to nothing.
        self._send_lock = anyio.Lock(fast_acquire=True)
        self._listening = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await super().__call__(scope, receive, send)  # no stream to run
            return
        # The writer wakes once per event: in a task of its own, each wake-up resumes a
        # short stack, not the request's whole way down through the middlewares and the
        # router (a seventh of the Python calls per event).  A client gone cancels the
        # writer, and so ends the reading at once; the stream written stops the listener.
        frames = direct_send(scope, send)  # the start goes through the middlewares
        with unwrapped():
            async with self._reader, anyio.create_task_group() as group:
                stream = group.cancel_scope
                written = partial(self._stop_listening, stream)
                group.start_soon(self._stream_response, send, frames, written, name="sse writer")
                await self._listen(receive, frames, stream)
        if self.background is not None:
            await self.background()

    async def _stream_response(
        self, send: Send, frames: Send | None = None, then: Callable[[], object] | None = None
    ) -> None:
        """The response's start to ``send``, its frames to ``frames`` (the server's own
        send, past the middlewares: :mod:`speculate.server.direct`); ``then`` once the
        last is sent."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        send = frames or send
        try:
            if isinstance(self.body_iterator, _LogFrames):
                await self.body_iterator.write(send)
            else:
                async for data in self.body_iterator:
                    body = data if isinstance(data, bytes) else ensure_bytes(data, self.sep)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
        except BaseException:
            # A failed write leaves the frames' generator at its yield: close it, so its
            # cleanup runs before the error goes on (as sse-starlette's own loop does).
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
            raise
        async with self._send_lock:
            self.active = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        if then is not None:
            then()

    async def _listen(self, receive: Receive, frames: Send, stream: anyio.CancelScope) -> None:
        """Until the client leaves (then the stream is cancelled) or the stream is
        written, a ping after every ``ping_interval`` of waiting; a ``receive()`` cut
        short consumes no message."""
        interval = self.ping_interval or math.inf
        self._listening = True
        try:
            while self.active:
                with anyio.move_on_after(interval):
                    if (await receive())["type"] == "http.disconnect":
                        if self.active:  # gone before the stream's end: stop the writer
                            self.active = False
                            stream.cancel()
                        return
                    continue
                async with self._send_lock:
                    if self.active:
                        await frames(self._ping_frame())
        finally:
            self._listening = False

    def _stop_listening(self, stream: anyio.CancelScope) -> None:
        """The stream is written (``active`` is off).  The server answers a ``receive()``
        that waits with ``http.disconnect`` once the response is complete (uvicorn wakes
        it right away, as ASGI asks), so the listener ends on its own; it is cancelled
        only if it is still waiting by the loop's next turn.  (A cancel scope's
        ``cancel()`` formats the current task's repr, a real share of a short stream's
        cost.)"""
        asyncio.get_running_loop().call_soon(self._cancel_listener, stream)

    def _cancel_listener(self, stream: anyio.CancelScope) -> None:
        if self._listening:
            stream.cancel()

    def _ping_frame(self) -> Message:
        if self.ping_message_factory is not None:
            ping = self.ping_message_factory()
        else:
            ping = ServerSentEvent(comment="ping", sep=self.sep)
        return {
            "type": "http.response.body",
            "body": ensure_bytes(ping, self.sep),
            "more_body": True,
        }


def event_stream(
    state: AppState,
    frames: AsyncIterable[Any],
    request_id: str,
    headers: dict[str, str] | None = None,
) -> EventSourceResponse:
    """An SSE response that counts as the request's reader while it is open."""
    return _EventStream(
        frames,
        state.jobs.following(request_id),
        ping=state.settings.server.sse_ping_s,
        headers=SSE_HEADERS | (headers or {}),
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
    return event_stream(state, _LogFrames(log, after), request_id)


async def cancel(request: Request) -> Response:
    """``DELETE /v1/requests/{id}``: stop a running request (its stream ends ``cancelled``)."""
    state: AppState = request.app.state.speculate
    request_id = request.path_params["request_id"]
    if state.requests.get(request_id) is None:
        raise NotFound(f"no request {request_id!r} is known")
    if not state.jobs.cancel(request_id):
        raise Conflict(f"request {request_id!r} is not running")
    return JSONResponse({"request_id": request_id, "cancelled": True}, status_code=202)
