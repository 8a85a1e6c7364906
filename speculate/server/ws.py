"""``GET /v1/ws``: several concurrent requests per socket, ``cancel`` and ``resume``.

One task group per socket: the reader below plus one forwarder per followed request.
The requests themselves run in the app's :class:`~speculate.engine.jobs.Jobs`, so a
socket that drops can be replaced by a new one that sends ``resume``; a request that
nobody resumes within the grace period is cancelled.  The reader's ``receive()`` is
how a disconnect is noticed.

Sends take no lock: uvicorn writes each message whole, so the frames of a socket's
concurrent requests interleave only between messages, and every event names its
request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from typing import Any

import anyio
from anyio.abc import TaskGroup
from starlette.exceptions import WebSocketException
from starlette.websockets import WebSocket, WebSocketDisconnect

from speculate.core.protocol import Error, encode_json
from speculate.core.request import SpeculateRequest
from speculate.engine.context import StopReason
from speculate.errors import BadRequest, Unavailable
from speculate.server.direct import direct_send
from speculate.server.errors import parse_json
from speculate.server.limits import admit, fit_to_windows
from speculate.server.ratelimit import RateLimiter
from speculate.server.schemas import parse_prewarm, parse_speculate
from speculate.server.state import AppState

CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013

Task = Callable[..., Coroutine[Any, Any, object]]
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class _Socket:
    def __init__(self, websocket: WebSocket, state: AppState, client: str) -> None:
        self.websocket = websocket
        self.state = state
        self.client = client
        self.started: list[str] = []  # requests this socket started
        self.tasks = 0  # its forwarders and prewarms still running

    def end_streams(self, reason: str) -> None:
        """The socket was closed for a violation: its requests end now, with no grace
        for a resume (a client that floods must not keep the edge busy after it)."""
        stop = StopReason("policy_violation", reason, "client")
        for request_id in self.started:
            self.state.jobs.cancel(request_id, stop)

    def spawn(self, group: TaskGroup, task: Task, *args: Any) -> None:
        """Start one of the socket's tasks, counted from here (before it runs, so the
        socket's end never misses one to cancel) until it ends."""
        self.tasks += 1
        group.start_soon(self._counted, task, *args, name=f"ws {task.__name__}")

    async def _counted(self, task: Task, *args: Any) -> None:
        try:
            await task(*args)
        finally:
            self.tasks -= 1

    async def forward(self, request_id: str, after: int) -> None:
        log = self.state.requests.get(request_id)
        if log is None:
            return
        # Each event straight to the server, past the middlewares and Starlette's socket
        # state (speculate.server.direct): a socket gone raises OSError there, one the
        # app has closed RuntimeError.
        send = direct_send(self.websocket.scope, self.websocket.send)
        try:
            async with self.state.jobs.following(request_id):
                async for batch in log.batches(after, through_refinement=True):
                    for event in batch:
                        await send({"type": "websocket.send", "text": encode_json(event)})
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the socket is gone; the reader sees the disconnect and cancels the rest

    async def reject(self, request_id: str, exc: BadRequest) -> None:
        event = Error(
            request_id=request_id,
            seq=1,
            code=exc.code,
            message=exc.message,
            source="client",
            fatal=True,
        )
        await self.websocket.send_text(encode_json(event))

    async def speculate(self, message: dict[str, Any], group: TaskGroup) -> None:
        client_id = message.get("request_id")
        if client_id is not None and (
            not isinstance(client_id, str)
            or not _CLIENT_ID.fullmatch(client_id)
            or self.state.requests.get(client_id) is not None
        ):
            await self.reject(str(client_id)[:64], BadRequest("request_id is invalid or in use"))
            return
        request_id = client_id or SpeculateRequest.new_id()
        try:
            job = parse_speculate(message, self.state.settings.server)
            admit(self.state, self.client)  # each stream counts, like any other transport's
            job = replace(job, request_id=request_id, client=self.client)
            job = await fit_to_windows(self.state, job)
        except BadRequest as exc:
            await self.reject(request_id, exc)
            return
        except Unavailable as exc:
            raise WebSocketException(CLOSE_TRY_AGAIN, exc.message) from None
        self.state.jobs.start(job)
        self.started.append(job.request_id)
        self.spawn(group, self.forward, job.request_id, 0)

    async def handle(self, message: dict[str, Any], group: TaskGroup) -> None:
        kind = message.get("type")
        if kind == "speculate":
            await self.speculate(message, group)
        elif kind == "prewarm":  # fire and forget: nothing is sent back
            try:
                messages = parse_prewarm(message, self.state.settings.server)
            except BadRequest as exc:
                raise WebSocketException(CLOSE_POLICY, f"prewarm: {exc.message}") from None
            self.spawn(group, self.state.orchestrator.prewarm, messages)
        elif kind == "cancel":
            self.state.jobs.cancel(str(message.get("request_id")))
        elif kind == "resume":
            request_id = str(message.get("request_id"))
            after = message.get("after", 0)
            if self.state.requests.get(request_id) is None:
                raise WebSocketException(CLOSE_POLICY, "resume: unknown request_id")
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                raise WebSocketException(
                    CLOSE_POLICY, "resume: 'after' must be a non-negative integer"
                )
            self.spawn(group, self.forward, request_id, after)
        else:
            raise WebSocketException(
                CLOSE_POLICY, "unknown message type; use speculate, prewarm, cancel or resume"
            )


def _parse(frame: Mapping[str, Any]) -> dict[str, Any]:
    text = frame.get("text")
    if text is None:
        raise WebSocketException(CLOSE_UNSUPPORTED, "send JSON text frames, not binary")
    try:
        message = parse_json(text)
    except BadRequest as exc:
        raise WebSocketException(CLOSE_INVALID_PAYLOAD, exc.message) from None
    if not isinstance(message, dict):
        raise WebSocketException(CLOSE_INVALID_PAYLOAD, "the message must be a JSON object")
    return message


SUBPROTOCOL = "speculate"


async def websocket_endpoint(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.speculate
    server = state.settings.server
    client = websocket.client.host if websocket.client else "unknown"
    if state.rate_limiter.check(client):
        await websocket.close(CLOSE_POLICY, "too many requests from this client")
        return
    # The browser UI offers "speculate" (and its key as a second subprotocol): a browser
    # drops a connection whose server picks none of those offered.
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    socket = _Socket(websocket, state, client)
    messages = RateLimiter(server.ws_messages_per_second * 60, int(server.ws_messages_per_second))
    async with anyio.create_task_group() as group:
        try:
            while True:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                if messages.check("socket"):
                    raise WebSocketException(CLOSE_POLICY, "too many messages; slow down")
                await socket.handle(_parse(frame), group)
        except WebSocketException as violation:  # a protocol violation ends the socket
            if violation.code == CLOSE_POLICY:
                socket.end_streams(f"the socket was closed: {violation.reason}")
            await websocket.close(violation.code, violation.reason)
        except WebSocketDisconnect:
            pass
        finally:
            # (Only if anything runs: a cancel scope's cancel() formats the task's repr,
            # a share of a socket's end when hundreds end together.)
            if socket.tasks:
                group.cancel_scope.cancel()
