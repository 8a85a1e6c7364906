"""An OpenAI-compatible cloud over real sockets that answers from a script and keeps
every request body: for testing what speculate sends and how it reads the answer
(stop sequences split across chunks, streamed tool calls, a hosted endpoint's 400)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.servers import serve_in_thread


@dataclass
class Reply:
    pieces: list[str] = field(default_factory=list)  # content deltas, in order
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # streamed in pieces
    refuse: dict[str, Any] | None = None  # an OpenAI error body, answered with HTTP 400
    gap_s: float = 0.0  # before each content piece


@dataclass
class RecordingCloud:
    reply: Reply = field(default_factory=Reply)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)  # each request's client socket
    url: str = ""

    def app(self) -> Starlette:
        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": "recorded", "object": "model"}]})

        async def chat(request: Request) -> Response:
            body = await request.json()
            self.bodies.append(body)
            assert request.client is not None
            self.peers.append((request.client.host, request.client.port))
            if self.reply.refuse is not None:
                return JSONResponse({"error": self.reply.refuse}, status_code=400)
            return StreamingResponse(self._chunks(), media_type="text/event-stream")

        return Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )

    async def _chunks(self) -> AsyncIterator[bytes]:
        def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return f"data: {json.dumps({'choices': [choice]})}\n\n".encode()

        for piece in self.reply.pieces:
            await anyio.sleep(self.reply.gap_s)
            yield frame({"content": piece})
        for index, call in enumerate(self.reply.tool_calls):
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            head = {"index": index, "id": call["id"], "type": "function"}
            yield frame({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
            half = len(arguments) // 2
            for part in (arguments[:half], arguments[half:]):
                yield frame({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        yield frame({}, "tool_calls" if self.reply.tool_calls else "stop")
        usage = {"prompt_tokens": 5, "completion_tokens": max(1, len(self.reply.pieces))}
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"


@contextmanager
def recording_cloud(reply: Reply | None = None) -> Iterator[RecordingCloud]:
    cloud = RecordingCloud(reply or Reply())
    with serve_in_thread(cloud.app()) as url:
        cloud.url = f"{url}/v1"
        yield cloud
