"""Streaming client for OpenAI-compatible servers: vLLM, llama_cpp.server, hosted APIs.

Four separate limits, because they fail differently: *connect* (nobody there),
*first token* (connected, but queued or prefilling too long), *stall* (the stream went
quiet mid-answer) and *total*.  Every failure becomes one
:class:`~speculate.errors.CloudError` subclass.  Leaving the ``stream()`` context
closes the HTTP response at once, so an answer nobody wants stops costing tokens; a
finished answer's body is read to its end first, so its connection serves the next
request.
The transport is injectable: tests drive protocol edge cases with
``httpx.MockTransport`` and the real thing over sockets.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx

from speculate.backends.base import GenerationParams, Usage
from speculate.backends.scoring import Scoring
from speculate.core.chat import Message
from speculate.core.circuit import full_jitter
from speculate.core.protocol import SSEDecoder
from speculate.core.verify import Scored
from speculate.errors import (
    CloudDropped,
    CloudError,
    CloudFirstTokenTimeout,
    CloudHTTPError,
    CloudProtocolError,
    CloudStalled,
    CloudTotalTimeout,
    CloudUnreachable,
    describe,
)
from speculate.settings import CloudSettings

_ERROR_BODY_LIMIT = 4096
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def request_options(params: GenerationParams) -> dict[str, Any]:
    """What a request asks of an OpenAI-compatible server besides length and
    temperature: its sampler settings, stop sequences and response format, those set."""
    options: dict[str, Any] = params.sampler_settings()
    if params.stop:
        options["stop"] = list(params.stop)
    if params.response_format is not None:
        options["response_format"] = params.response_format
    return options


# A hosted endpoint that refuses one of these wants the settings that leave it out.
_HINTS = {
    "max_tokens": "set cloud.token_limit_param: max_completion_tokens",
    "temperature": "set cloud.send_temperature: false",
}


def refusal(body: bytes) -> str:
    """What an error body says, for a person: OpenAI's ``error.message`` and the
    parameter it names (with the setting that avoids it) when it is that shape, else
    the start of the body."""
    text = body[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")
    try:
        error = json.loads(text)["error"]
        message = str(error["message"])[:300] if isinstance(error, dict) else str(error)[:300]
        param = error.get("param") if isinstance(error, dict) else None
    except (ValueError, KeyError, TypeError):
        return text[:300]
    if isinstance(param, str) and param:
        message += f" (param: {param}"
        message += f"; {_HINTS[param]})" if param in _HINTS else ")"
    return message


# How long the end of a finished answer's body may take to come after its ``[DONE]``.
END_OF_BODY_WAIT_S = 0.25


Trace = Callable[[str, dict[str, Any]], Awaitable[None]]
# httpcore's trace events (after a "connection.", "http11." or "http2." prefix) that mean
# a request has left, or is waiting on the network before it can.
SENT_EVENTS = (
    "send_request_body.complete",
    "connect_tcp.started",
    "connect_unix_socket.started",
)


def telling_when_sent(on_sent: Callable[[], None]) -> Trace:
    """An httpcore ``trace`` extension that calls ``on_sent`` once, when the request's
    body is written or a new connection is begun (its handshake then waits on the
    network, and the request goes out after it)."""
    told = False

    async def trace(event: str, info: dict[str, Any]) -> None:
        nonlocal told
        if not told and event.endswith(SENT_EVENTS):
            told = True
            on_sent()

    return trace


class CloudTokenStream:
    def __init__(self, response: httpx.Response, settings: CloudSettings, started: float) -> None:
        self.usage = Usage()
        self._settings = settings
        self._started = started
        self._lines = response.aiter_text()
        self._decoder = SSEDecoder()
        self._pending: list[str] = []
        self._first = True
        self._finished = False

    async def receive(self) -> str:
        while not self._pending:
            if self._finished:
                raise anyio.EndOfStream
            await self._read_more()
        return self._pending.pop(0)

    async def _read_more(self) -> None:
        s = self._settings
        remaining = s.total_timeout_s - (time.monotonic() - self._started)
        limit = s.first_token_timeout_s if self._first else s.stall_timeout_s
        if remaining <= 0:
            raise CloudTotalTimeout(f"the cloud answer exceeded {s.total_timeout_s:g} s")
        try:
            with anyio.fail_after(min(limit, remaining)):
                chunk = await self._lines.__anext__()
        except TimeoutError:
            if remaining <= limit:
                raise CloudTotalTimeout(
                    f"the cloud answer exceeded {s.total_timeout_s:g} s"
                ) from None
            if self._first:
                raise CloudFirstTokenTimeout(
                    f"no token from the cloud within {limit:g} s"
                ) from None
            raise CloudStalled(f"the cloud stream stalled for {limit:g} s") from None
        except StopAsyncIteration:
            if not self._finished:
                raise CloudProtocolError("the cloud stream ended without [DONE]") from None
            return
        except httpx.HTTPError as exc:
            raise CloudDropped(f"the cloud connection broke mid-stream: {describe(exc)}") from exc
        for message in self._decoder.feed(chunk):
            if len(message.data) > s.max_chunk_bytes:
                raise CloudProtocolError(f"a cloud chunk exceeded {s.max_chunk_bytes} bytes")
            self._handle(message.data)
        if self._decoder.pending > s.max_chunk_bytes:
            raise CloudProtocolError(f"a cloud line exceeded {s.max_chunk_bytes} bytes")

    async def read_to_end(self) -> None:
        """After ``[DONE]``, read what is left of the body (its end is in the socket or on
        its way), so the connection goes back to the pool for the next request: httpx
        closes a connection whose response was not read to its end, and a new one costs a
        TCP handshake, and a TLS one, one to three round trips to a remote cloud.  An
        unfinished answer is not read on (it is closed to stop its cost); a body that
        does not end soon is closed too."""
        if not self._finished:
            return
        with anyio.move_on_after(END_OF_BODY_WAIT_S):
            try:
                async for _ in self._lines:
                    pass
            except httpx.HTTPError:
                pass

    def _handle(self, data: str) -> None:
        if data.strip() == "[DONE]":
            self._finished = True
            return
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise CloudProtocolError(f"the cloud sent malformed JSON: {data[:200]}") from exc
        if not isinstance(obj, dict):
            raise CloudProtocolError(f"the cloud sent a non-object chunk: {data[:200]}")
        if "error" in obj:
            detail = json.dumps(obj["error"])[:300]
            raise CloudError(f"the cloud reported an error mid-stream: {detail}")
        if isinstance(obj.get("usage"), dict):
            self.usage.prompt_tokens = int(obj["usage"].get("prompt_tokens") or 0)
            self.usage.completion_tokens = int(obj["usage"].get("completion_tokens") or 0)
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict):
                raise CloudProtocolError("a cloud chunk's choice is not an object")
            delta = choice.get("delta") or {}
            # Chat chunks carry delta.content; completions chunks (verify mode) carry text.
            text = delta.get("content") if isinstance(delta, dict) else None
            if "delta" not in choice:
                text = choice.get("text")
            if text:
                if not isinstance(text, str):
                    raise CloudProtocolError("a cloud chunk's content is not a string")
                self._first = False
                self._pending.append(text)
            if isinstance(delta, dict) and delta.get("tool_calls"):
                self._first = False
                self._add_tool_calls(delta["tool_calls"])
            if choice.get("finish_reason"):
                self.usage.finish_reason = str(choice["finish_reason"])

    def _add_tool_calls(self, pieces: Any) -> None:
        """OpenAI streams a tool call in pieces: the first names it (index, id, name),
        the rest append to its arguments."""
        if not isinstance(pieces, list):
            raise CloudProtocolError("a cloud chunk's tool_calls is not a list")
        calls = self.usage.tool_calls
        for piece in pieces:
            if not isinstance(piece, dict):
                raise CloudProtocolError("a cloud chunk's tool call is not an object")
            index = piece.get("index", len(calls))
            if not isinstance(index, int) or not 0 <= index <= len(calls):
                raise CloudProtocolError("a cloud chunk's tool call has a bad index")
            if index == len(calls):
                calls.append(
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                )
            call, function = calls[index], piece.get("function") or {}
            call["id"] = piece.get("id") or call["id"]
            call["type"] = piece.get("type") or call["type"]
            for key in ("name", "arguments"):
                part = function.get(key) if isinstance(function, dict) else None
                if isinstance(part, str):
                    call["function"][key] += part


class OpenAICompatCloud:
    """A :class:`~speculate.backends.base.CloudBackend` for any OpenAI-compatible server."""

    def __init__(
        self,
        settings: CloudSettings,
        *,
        base_url: str,
        model: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        scoring: Scoring | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self.model_name = model or settings.model or ""
        self.scoring: Scoring | None = scoring
        self._listing: dict[str, Any] | None = None
        self._urls: dict[str, httpx.URL] = {}
        headers = {"Accept": "text/event-stream", **settings.extra_headers}
        api_key = os.environ.get(settings.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_s,
                read=None,  # reads are bounded by the first-token, stall and total limits
                write=settings.connect_timeout_s,
                pool=settings.connect_timeout_s,
            ),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def probe(self) -> dict[str, Any]:
        """Is the cloud answering, and how fast?  One ``GET /models`` round trip."""
        started = time.perf_counter()
        try:
            response = await self._client.get("/models", timeout=self.settings.connect_timeout_s)
        except httpx.HTTPError as exc:
            return {"state": "down", "error": type(exc).__name__}
        rtt_ms = round((time.perf_counter() - started) * 1000, 2)
        if response.status_code >= 400:
            return {"state": "down", "status": response.status_code, "rtt_ms": rtt_ms}
        return {"state": "up", "rtt_ms": rtt_ms}

    async def _listed_model(self) -> dict[str, Any]:
        """The first entry of ``/models`` (asked once, then remembered)."""
        if self._listing is None:
            try:
                response = await self._client.get("/models")
                response.raise_for_status()
                self._listing = dict(response.json()["data"][0])
            except (httpx.HTTPError, KeyError, IndexError, ValueError, TypeError) as exc:
                raise CloudUnreachable(
                    f"could not list models at {self.base_url}: {describe(exc)}"
                ) from exc
        return self._listing

    async def served_by(self) -> str | None:
        """Who serves the model (``owned_by`` in ``/models``: vLLM says ``vllm``)."""
        try:
            return str((await self._listed_model()).get("owned_by") or "") or None
        except CloudUnreachable:
            return None

    async def discover_model(self) -> str:
        """Ask ``/models`` which model to use when none is configured."""
        if not self.model_name:
            listed = await self._listed_model()
            if "id" not in listed:
                raise CloudUnreachable(f"/models at {self.base_url} names no model")
            self.model_name = str(listed["id"])
        return self.model_name

    @asynccontextmanager
    async def stream(
        self, messages: list[Message], params: GenerationParams
    ) -> AsyncIterator[CloudTokenStream]:
        s = self.settings
        body: dict[str, Any] = {
            **s.extra_body,
            **params.cloud_fields,
            **request_options(params),
            "model": self.model_name,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            s.token_limit_param: params.max_tokens,
        }
        if s.send_temperature:
            body["temperature"] = params.temperature
        if self.scoring is not None:
            body.update(self.scoring.sampling)
        started = time.monotonic()
        request = self._post("/chat/completions", body, params)
        response = await self._open(request)
        tokens = CloudTokenStream(response, self.settings, started)
        try:
            yield tokens
        finally:
            with anyio.CancelScope(shield=True):
                await tokens.read_to_end()
                await response.aclose()

    # -- verify mode -------------------------------------------------------------------
    async def score(self, messages: list[Message], continuation: str) -> Scored:
        """The cloud's verdict on a continuation of the assistant's answer, token by token
        in its own tokenizer, plus its own next token."""
        if self.scoring is None:
            raise CloudError("this cloud cannot score drafts (set cloud.flavor)")
        path, body = self.scoring.score_request(self.model_name, messages, continuation)
        request = self._post(path, body)
        s = self.settings
        with anyio.CancelScope() as scope:
            scope.deadline = anyio.current_time() + min(s.first_token_timeout_s, s.total_timeout_s)
            response = await self._open(request)
            try:
                content = await response.aread()
            except httpx.HTTPError as exc:
                raise CloudDropped(f"the cloud connection broke: {describe(exc)}") from exc
            finally:
                await response.aclose()
        if scope.cancelled_caught:
            raise CloudFirstTokenTimeout(
                f"no verdict from the cloud within {s.first_token_timeout_s:g} s"
            )
        try:
            answer = json.loads(content)
        except ValueError as exc:
            excerpt = content[:200].decode("utf-8", "replace")
            raise CloudProtocolError(f"the cloud sent malformed JSON: {excerpt}") from exc
        return self.scoring.parse_score(answer, messages, continuation)

    @asynccontextmanager
    async def continue_from(
        self, messages: list[Message], prefix: str, params: GenerationParams
    ) -> AsyncIterator[CloudTokenStream]:
        """Stream the cloud's own continuation of an assistant answer that begins with
        ``prefix``."""
        if self.scoring is None:
            raise CloudError("this cloud cannot continue an answer (set cloud.flavor)")
        path, body = self.scoring.continue_request(self.model_name, messages, prefix, params)
        started = time.monotonic()
        response = await self._open(self._post(path, body, params))
        tokens = CloudTokenStream(response, self.settings, started)
        try:
            yield tokens
        finally:
            with anyio.CancelScope(shield=True):
                await tokens.read_to_end()
                await response.aclose()

    def _post(
        self, path: str, body: dict[str, Any], params: GenerationParams | None = None
    ) -> httpx.Request:
        """A POST of ``body`` to ``path`` under the base URL, telling ``params.on_sent``
        when it has left.  The full URL is built once per path: httpx joins a relative
        one to the base URL on every request, two thirds of building a request (80 of
        120 microseconds)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.base_url + path)
        request = self._client.build_request("POST", url, json=body)
        if params is not None and params.on_sent is not None:
            request.extensions["trace"] = telling_when_sent(params.on_sent)
        return request

    async def _open(self, request: httpx.Request) -> httpx.Response:
        """Send the request; retry refused connections and 429/5xx answers, but only
        before the first byte of an answer (capped, full-jitter backoff, Retry-After
        honoured within the cap), and only while the first-token budget lasts."""
        s = self.settings
        started = time.monotonic()
        for attempt in range(s.retries + 1):
            try:
                return await self._open_once(request)
            except (CloudUnreachable, CloudHTTPError) as exc:
                retryable = not isinstance(exc, CloudHTTPError) or exc.status in RETRY_STATUSES
                if not retryable or attempt == s.retries:
                    raise
                delay = full_jitter(attempt, s.retry_base_s, s.retry_cap_s)
                if isinstance(exc, CloudHTTPError) and exc.retry_after_s is not None:
                    delay = min(s.retry_cap_s, exc.retry_after_s)
                if time.monotonic() - started + delay >= s.first_token_timeout_s:
                    raise
                await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open_once(self, request: httpx.Request) -> httpx.Response:
        s = self.settings
        try:
            with anyio.fail_after(min(s.first_token_timeout_s, s.total_timeout_s)):
                response = await self._client.send(request, stream=True)
        except TimeoutError:
            raise CloudFirstTokenTimeout(
                f"the cloud sent no response headers within {s.first_token_timeout_s:g} s"
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise CloudUnreachable(
                f"cannot connect to the cloud at {self.base_url}: {describe(exc)}"
            ) from exc
        except httpx.HTTPError as exc:
            raise CloudError(f"the cloud request failed: {describe(exc)}") from exc
        if response.status_code >= 400:
            await self._raise_for_status(response)
        return response

    async def _raise_for_status(self, response: httpx.Response) -> None:
        try:
            body = b""
            async for part in response.aiter_bytes():
                body += part
                if len(body) >= _ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            body = b""
        finally:
            await response.aclose()
        retry_after = response.headers.get("retry-after")
        raise CloudHTTPError(
            f"the cloud answered HTTP {response.status_code}: {refusal(body)}",
            status=response.status_code,
            retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )
