"""``POST /v1/chat/completions`` and ``GET /v1/models``, OpenAI-compatible.

Plain clients get only the final answer, append-only: the request runs with
progressive commits and the stream carries each newly committed piece, so no text a
client has received is ever retracted.  Model names choose the mode.

Opt-in extension: with ``"speculate": {"events": true}`` in the body, the stream also
carries every speculate event (draft, patch, ...) as a chunk with empty ``choices``
and a ``speculate`` field holding the event; plain clients skip such chunks as they
skip usage chunks.  A non-streaming answer always carries a ``speculate`` summary.
With ``"speculate": {"draft": "reasoning"}`` or a model name ending in ``+draft``, the
edge's draft streams as ``delta.reasoning_content`` (a "thinking" block in Open WebUI
and llama.cpp's UI) while ``content`` still carries only final text.  What each request
field does is in :mod:`speculate.server.openai_fields`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speculate.core.protocol import Done, Draft, Error, to_dict
from speculate.core.request import SpeculateRequest
from speculate.core.text import ShownText
from speculate.engine.eventlog import EventLog
from speculate.errors import BadRequest, Unavailable, UnknownModel, UpstreamFailed
from speculate.server.errors import client_address, read_json
from speculate.server.limits import admit, fit_to_windows
from speculate.server.openai_fields import (
    DRAFT_SUFFIX,
    MODELS,
    ChatBody,
    model_names,
    parse_chat,
)
from speculate.server.sse import event_stream
from speculate.server.state import AppState


async def list_models(request: Request) -> Response:
    data = [
        {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "speculate",
            "mode": MODELS[name.removesuffix(DRAFT_SUFFIX)],
        }
        for name in model_names()
    ]
    return JSONResponse({"object": "list", "data": data})


def _check_route(state: AppState, job: SpeculateRequest) -> None:
    """A request with tools is refused before it starts if the cloud will not answer
    it (a JSON format is honoured by the edge's grammar instead)."""
    if not job.cloud_fields.get("tools"):
        return
    decision = state.orchestrator.decide(job)
    if decision.route == "cloud":
        return
    if decision.basis:  # the cloud is wanted but away (its circuit is open): try later
        raise Unavailable(
            "tools need the cloud, and it is unavailable right now",
            code="cloud_unavailable",
            retry_after_s=state.settings.cloud.circuit_probe_base_s,
        )
    # Privacy keeps it on the device, or there is no cloud: this request cannot be served.
    code = "kept_on_device" if decision.private_kinds else "no_cloud"
    raise BadRequest(f"tools need the cloud, but {decision.reason}", code=code, param="tools")


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
    data = await read_json(request, state.settings.server.ws_max_message_bytes)
    body, job = parse_chat(data, state.settings.server)
    if body.model not in model_names():
        message = f"The model `{body.model}` does not exist; see GET /v1/models."
        raise UnknownModel(message, param="model")
    client = client_address(request)
    admit(state, client)
    job = await fit_to_windows(state, replace(job, client=client))
    _check_route(state, job)
    log = state.jobs.start(job, attached=True)
    await state.jobs.first_step(log)
    limit = job.max_tokens or state.settings.edge.max_tokens
    if not body.stream:
        async with state.jobs.following(job.request_id):
            async for _ in log.follow():
                pass
        return _complete(body, log, limit)

    chunks = _stream(body, job, log.follow(), limit)
    return event_stream(state, chunks, job.request_id, {"X-Request-ID": job.request_id})


FinishReason = Literal["stop", "length", "tool_calls"]


def _finish_reason(done: Done, limit: int) -> FinishReason:
    """``tool_calls`` when the cloud called tools; ``length`` when the token limit ended
    the answer (as the side that gave the final text says, or it produced as many
    tokens as it was allowed); else ``stop``."""
    if done.tool_calls:
        return "tool_calls"
    cloud = done.final_source == "cloud"
    said = done.stats.get("cloud_finish" if cloud else "edge_finish")
    if said in ("stop", "length"):
        return "length" if said == "length" else "stop"
    produced = done.stats["cloud_tokens" if cloud else "draft_tokens"]
    return "length" if int(produced or 0) >= limit else "stop"


def _tool_call_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": index, **call} for index, call in enumerate(calls)]


def _complete(body: ChatBody, log: EventLog, limit: int) -> Response:
    shown = ShownText()
    for event in log.events:
        shown.apply(event)
    if shown.done is None:
        fatal = shown.fatal
        why = fatal.message if isinstance(fatal, Error) else "the request ended without answer"
        raise UpstreamFailed(why, code=fatal.code if fatal else None)
    done = shown.done
    message: dict[str, Any] = {"role": "assistant", "content": done.text}
    if done.tool_calls:
        message["tool_calls"] = done.tool_calls
        message["content"] = done.text or None
    if body.draft_as_reasoning:
        drafts = (event.text for event in log.events if isinstance(event, Draft))
        message["reasoning_content"] = "".join(drafts)
    return JSONResponse(
        {
            "id": done.request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
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
        delta: dict[str, Any] | None, finish: FinishReason | None = None, **extra: Any
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
        return {"data": orjson.dumps(payload).decode()}

    shown, sent, reasoning = ShownText(), 0, body.draft_as_reasoning
    yield chunk({"role": "assistant", "content": ""})
    async for event in events:
        shown.apply(event)
        if body.speculate.events:
            yield chunk(None, speculate=to_dict(event))
        if reasoning and isinstance(event, Draft) and event.text:
            # The draft as a stock chat UI shows a model's thinking; content stays final.
            yield chunk({"reasoning_content": event.text})
        if shown.committed > sent:
            yield chunk({"content": shown.text[sent : shown.committed]})
            sent = shown.committed
        if isinstance(event, Done):
            if event.tool_calls:
                yield chunk({"tool_calls": _tool_call_deltas(event.tool_calls)})
            yield chunk({}, _finish_reason(event, limit))
            if body.stream_options and body.stream_options.include_usage:
                yield chunk(None, usage=_usage(event))
        elif isinstance(event, Error) and event.fatal:
            error = {"message": event.message, "type": "server_error", "code": event.code}
            yield {"data": json.dumps({"error": error})}
            break
    yield {"data": "[DONE]"}
