"""``GET /v1/ws``: several concurrent requests per socket, ``cancel`` and ``resume``.

One task group per socket: the reader below, plus one task per request that runs
the orchestrator and forwards its events.  The reader's ``receive()`` is how a
disconnect is noticed; leaving the group cancels every request of the socket.
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from speculate.core.protocol import Error, encode_json
from speculate.errors import BadRequest
from speculate.eventlog import EventLog
from speculate.orchestrator import SpeculateRequest
from speculate.server.schemas import parse_speculate
from speculate.server.state import AppState

CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class _Socket:
    def __init__(self, websocket: WebSocket, state: AppState) -> None:
        self.websocket = websocket
        self.state = state
        self.send_lock = anyio.Lock()
        self.producers: dict[str, anyio.CancelScope] = {}

    async def send(self, text: str) -> None:
        async with self.send_lock:
            await self.websocket.send_text(text)

    async def forward(self, log: EventLog, after: int) -> None:
        try:
            async for event in log.follow(after):
                await self.send(encode_json(event))
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the socket is gone; the reader sees the disconnect and cancels the rest

    async def run_request(self, job: SpeculateRequest, log: EventLog) -> None:
        scope = anyio.CancelScope()
        self.producers[job.request_id] = scope

        async def produce() -> None:
            with scope:
                await self.state.orchestrator.run(job, log)

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(produce)
                await self.forward(log, 0)
        finally:
            self.producers.pop(job.request_id, None)

    async def reject(self, request_id: str, exc: BadRequest) -> None:
        event = Error(
            request_id=request_id, seq=1, code=exc.code, message=exc.message, source="client",
            fatal=True,
        )  # fmt: skip
        await self.send(encode_json(event))

    async def handle(self, message: dict[str, Any], group: anyio.abc.TaskGroup) -> None:
        kind = message.get("type")
        if kind == "speculate":
            client_id = message.get("request_id")
            if client_id is not None and (
                not isinstance(client_id, str)
                or not _CLIENT_ID.fullmatch(client_id)
                or self.state.requests.get(client_id) is not None
            ):
                await self.reject(
                    str(client_id)[:64], BadRequest("request_id is invalid or in use")
                )
                return
            try:
                job = parse_speculate(message, self.state.settings.server)
            except BadRequest as exc:
                await self.reject(client_id or SpeculateRequest.new_id(), exc)
                return
            if client_id:
                job = SpeculateRequest(
                    job.messages, job.mode, job.max_tokens, job.temperature, client_id
                )
            log = self.state.requests.create(job.request_id)
            group.start_soon(self.run_request, job, log)
        elif kind == "cancel":
            scope = self.producers.get(str(message.get("request_id")))
            if scope is not None:
                scope.cancel()
        elif kind == "resume":
            known = self.state.requests.get(str(message.get("request_id")))
            after = message.get("after", 0)
            if known is None or not isinstance(after, int) or after < 0:
                await self.websocket.close(
                    CLOSE_POLICY, "resume: unknown request_id or bad 'after'"
                )
                raise WebSocketDisconnect(CLOSE_POLICY)
            group.start_soon(self.forward, known, after)
        else:
            await self.websocket.close(
                CLOSE_POLICY, "unknown message type; use speculate, cancel or resume"
            )
            raise WebSocketDisconnect(CLOSE_POLICY)


async def websocket_endpoint(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.speculate
    await websocket.accept()
    socket = _Socket(websocket, state)
    async with anyio.create_task_group() as group:
        try:
            while True:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                text = frame.get("text")
                if text is None:
                    await websocket.close(CLOSE_UNSUPPORTED, "send JSON text frames, not binary")
                    break
                try:
                    message = json.loads(text)
                except ValueError:
                    await websocket.close(CLOSE_INVALID_PAYLOAD, "the message is not valid JSON")
                    break
                if not isinstance(message, dict):
                    await websocket.close(
                        CLOSE_INVALID_PAYLOAD, "the message must be a JSON object"
                    )
                    break
                await socket.handle(message, group)
        except WebSocketDisconnect:
            pass
        finally:
            group.cancel_scope.cancel()
