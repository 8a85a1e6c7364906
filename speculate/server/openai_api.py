"""``POST /v1/chat/completions`` and ``GET /v1/models``, OpenAI-compatible.

Plain clients get only the final answer, append-only: the request runs with
progressive commits and the stream carries each newly committed piece, so no text a
client has received is ever retracted.  Model names choose the mode.

Opt-in extension: with ``"speculate": {"events": true}`` in the body, the stream also
carries every speculate event (draft, patch, ...) as a chunk with empty ``choices``
and a ``speculate`` field holding the event; plain clients skip such chunks as they
skip usage chunks.  A non-streaming answer always carries a ``speculate`` summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speculate.core.protocol import Done, Error, to_dict
from speculate.core.request import Mode, SpeculateRequest
from speculate.core.text import ShownText
from speculate.engine.eventlog import EventLog
from speculate.errors import BadRequest, UnknownModel, UpstreamFailed
from speculate.server.errors import client_address, read_json
from speculate.server.limits import admit, fit_to_windows
from speculate.server.schemas import (
    ChatMessage,
    Temperature,
    TokenCount,
    conversation,
    numbers_only,
)
from speculate.server.sse import event_stream
from speculate.server.state import AppState

MODELS: dict[str, Mode] = {
    "speculate": "auto",
    "speculate-speculative": "speculative",
    "speculate-verify": "verify",
    "speculate-edge": "edge",
    "speculate-cloud": "cloud",
}


class StreamOptions(BaseModel):
    include_usage: bool = False


class Extension(BaseModel):
    events: bool = False


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send many optional fields

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: Temperature | None = None
    n: Annotated[int, Field(ge=1, le=1), BeforeValidator(numbers_only)] = 1  # one choice
    speculate: Extension = Extension()


async def list_models(request: Request) -> Response:
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "speculate", "mode": mode}
        for name, mode in MODELS.items()
    ]
    return JSONResponse({"object": "list", "data": data})


def _parse(data: object, state: AppState) -> tuple[ChatBody, SpeculateRequest]:
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        body = ChatBody.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BadRequest(f"{where}: {err['msg']}", param=where or None) from None
    limits = state.settings.server
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None and max_tokens > limits.max_tokens_limit:
        raise BadRequest(f"max_tokens must be at most {limits.max_tokens_limit}")
    job = SpeculateRequest(
        messages=conversation(body.messages, limits),
        mode=MODELS.get(body.model, "auto"),
        max_tokens=max_tokens,
        temperature=body.temperature,
        request_id="chatcmpl-" + SpeculateRequest.new_id().removeprefix("req_"),
        append_only=True,
    )
    return body, job


def _usage(done: Done) -> dict[str, int]:
    stats = done.stats
    completion = int(
        stats["cloud_tokens"] if done.final_source == "cloud" else stats["draft_tokens"]
    )
    prompt = int(stats.get("prompt_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _summary(done: Done, route: str | None) -> dict[str, Any]:
    return {
        "request_id": done.request_id,
        "route": route,
        "final_source": done.final_source,
        "stats": done.stats,
    }


async def chat_completions(request: Request) -> Response:
    state: AppState = request.app.state.speculate
    body, job = _parse(await read_json(request, state.settings.server.ws_max_message_bytes), state)
    if body.model not in MODELS:
        message = f"The model `{body.model}` does not exist; see GET /v1/models."
        raise UnknownModel(message, param="model")
    client = client_address(request)
    admit(state, client)
    job = await fit_to_windows(state, replace(job, client=client))
    log = state.jobs.start(job, attached=True)
    limit = job.max_tokens or state.settings.edge.max_tokens
    if not body.stream:
        async with state.jobs.following(job.request_id):
            async for _ in log.follow():
                pass
        return _complete(body, log, limit)

    chunks = _stream(body, job, log.follow(), limit)
    return event_stream(state, chunks, job.request_id, {"X-Request-ID": job.request_id})


def _finish_reason(done: Done, limit: int) -> Literal["stop", "length"]:
    """``length`` when the token limit ended the answer (the side that gave the final
    text produced as many tokens as it was allowed), else ``stop``."""
    produced = done.stats["cloud_tokens" if done.final_source == "cloud" else "draft_tokens"]
    return "length" if int(produced or 0) >= limit else "stop"


def _complete(body: ChatBody, log: EventLog, limit: int) -> Response:
    shown = ShownText()
    for event in log.events:
        shown.apply(event)
    if shown.done is None:
        fatal = shown.fatal
        message = fatal.message if isinstance(fatal, Error) else "the request ended without answer"
        raise UpstreamFailed(message, code=fatal.code if fatal else None)
    done = shown.done
    return JSONResponse(
        {
            "id": done.request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text},
                    "logprobs": None,
                    "finish_reason": _finish_reason(done, limit),
                }
            ],
            "usage": _usage(done),
            "speculate": _summary(done, log.summary().route),
        }
    )


async def _stream(
    body: ChatBody, job: SpeculateRequest, events: AsyncIterator[Any], limit: int
) -> AsyncIterator[dict[str, str]]:
    created = int(time.time())

    def chunk(
        delta: dict[str, str] | None, finish: Literal["stop", "length"] | None = None, **extra: Any
    ) -> dict[str, str]:
        choices = (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        payload = {
            "id": job.request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": choices,
            **extra,
        }
        return {"data": json.dumps(payload, ensure_ascii=False)}

    shown, sent = ShownText(), 0
    yield chunk({"role": "assistant", "content": ""})
    async for event in events:
        shown.apply(event)
        if body.speculate.events:
            yield chunk(None, speculate=to_dict(event))
        if shown.committed > sent:
            yield chunk({"content": shown.text[sent : shown.committed]})
            sent = shown.committed
        if isinstance(event, Done):
            yield chunk({}, _finish_reason(event, limit))
            if body.stream_options and body.stream_options.include_usage:
                yield chunk(None, usage=_usage(event))
        elif isinstance(event, Error) and event.fatal:
            error = {"message": event.message, "type": "server_error", "code": event.code}
            yield {"data": json.dumps({"error": error})}
            break
    yield {"data": "[DONE]"}
