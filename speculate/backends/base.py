"""What the orchestrator needs from a model, whatever runs it.

A backend's ``stream()`` is an async context manager yielding a :class:`TokenStream`:
entering starts generation, leaving stops it and frees every resource (thread, HTTP
connection) before returning, so cancellation never leaves work running behind.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from speculate.core.chat import Message
from speculate.core.stops import StopCutter
from speculate.core.verify import Scored
from speculate.errors import SpeculateError


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int
    temperature: float
    top_p: float | None = None  # None: the model's own default (a side is never sent it)
    seed: int | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: tuple[str, ...] = ()
    response_format: dict[str, Any] | None = None  # OpenAI's; a JSON format constrains output
    # Sent to the cloud as given (tools, tool_choice, user, ...); an edge never sees them.
    cloud_fields: dict[str, Any] = field(default_factory=dict)

    # Who asks (the client's address): turns on a shared model go round the clients.
    client: str = ""
    # Report the entropy (nats) of the first this many tokens in ``usage.extra["entropy"]``,
    # for the router's confidence check; 0: none (it costs a pass over the vocabulary).
    confidence_tokens: int = 0
    # Called once the request has left for the model, by a backend that can tell (an HTTP
    # one: its body is written, or a new connection is being made), so that a response's
    # own first write waits for it rather than slipping in between.
    on_sent: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def sampler_settings(self) -> dict[str, Any]:
        """The sampler settings the request set (llama-cpp-python and OpenAI-compatible
        servers use the same names); only those set: a hosted endpoint may refuse a
        field it does not know."""
        settings = {
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        return {name: value for name, value in settings.items() if value is not None}


@dataclass(slots=True)
class Usage:
    """Filled in by the backend while it streams; read after the stream ends."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the model had evaluated already (prefix reuse)
    queue_ms: float = 0.0
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The tools the model called, in OpenAI's shape (id, type, function: name, arguments).
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class TokenStream(Protocol):
    usage: Usage

    async def receive(self) -> str:
        """The next piece of text; raises ``anyio.EndOfStream`` at the end and a
        :class:`~speculate.errors.SpeculateError` on failure."""
        ...


# Given each piece of a followed stream on the event loop; True pauses the following
# (the pieces after it wait for the next ``follow``).
Listener = Callable[[str], bool | None]


class TokenChannel:
    """A token stream its backend feeds on the event loop (``put`` each piece, then
    ``end``), read by awaiting :meth:`receive` or by :meth:`follow`.

    Followed, a piece goes to the listener inside ``put`` itself: a token costs the loop
    one callback on its way (the one a model's thread queues), where a reader's task
    would be woken and its whole stack resumed for every token.  A follower that has been
    cancelled is given nothing more, as a cancelled reader would take nothing more."""

    def __init__(self, usage: Usage | None = None) -> None:
        self.usage = usage if usage is not None else Usage()
        self._pieces: deque[str] = deque()
        self._listener: Listener | None = None
        self._waiter: asyncio.Future[bool] | None = None  # the reader's, or the follower's
        self._ended = False
        self._error: SpeculateError | None = None

    def put(self, piece: str) -> None:
        if self._ended:
            return
        waiter, listener = self._waiter, self._listener
        if waiter is None or waiter.done():
            self._pieces.append(piece)  # nobody waits (or the follower is being cancelled)
        elif listener is None:
            self._pieces.append(piece)
            waiter.set_result(False)
        else:
            try:
                if listener(piece):
                    waiter.set_result(False)  # paused
            except Exception as exc:  # the follower's own failure: it ends its following
                waiter.set_exception(exc)

    def end(self, error: SpeculateError | None = None) -> None:
        """No more pieces; ``error``: the stream failed (raised to its reader)."""
        if self._ended:
            return
        self._ended, self._error = True, error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    async def _wait(self, listener: Listener | None) -> bool:
        self._waiter = asyncio.get_running_loop().create_future()
        self._listener = listener
        try:
            return await self._waiter
        finally:
            self._waiter = self._listener = None

    def _raise_end(self) -> None:
        if self._error is not None:
            raise self._error
        raise anyio.EndOfStream

    async def receive(self) -> str:
        while not self._pieces:
            if self._ended:
                self._raise_end()
            await self._wait(None)
        return self._pieces.popleft()

    async def follow(self, listener: Listener) -> bool:
        """Give every piece to ``listener`` as it comes; True at the stream's end, False
        when the listener paused (the stream's error, and the listener's, raise here)."""
        while True:
            while self._pieces:
                if listener(self._pieces.popleft()):
                    return False
            if self._ended:
                try:
                    self._raise_end()
                except anyio.EndOfStream:
                    return True
            if not await self._wait(listener):
                return False  # paused


async def follow(tokens: TokenStream, listener: Listener) -> bool:
    """Give each piece of ``tokens`` to ``listener`` until the end (True) or until the
    listener pauses (False; the next call goes on from there): handed over by the stream
    itself where it can (a :class:`TokenChannel`), else read one by one."""
    follows = getattr(tokens, "follow", None)
    if follows is not None:
        return bool(await follows(listener))
    while True:
        try:
            piece = await tokens.receive()
        except anyio.EndOfStream:
            return True
        if listener(piece):
            return False


class StoppedStream:
    """A token stream that ends just before the first of the request's stop sequences,
    wherever the model's pieces split it (the model's server may not have stopped)."""

    def __init__(self, tokens: TokenStream, stops: tuple[str, ...]) -> None:
        self.usage = tokens.usage
        self._tokens = tokens
        self._cutter = StopCutter(stops)
        self._ended = False

    async def receive(self) -> str:
        while not self._ended:
            try:
                piece = await self._tokens.receive()
            except anyio.EndOfStream:
                self._ended = True
                tail = self._cutter.finish()
                if tail:
                    return tail
                break
            text = self._cutter.feed(piece)
            if self._cutter.stopped:
                self._ended = True
                self.usage.finish_reason = "stop"
            if text:
                return text
        raise anyio.EndOfStream

    async def follow(self, listener: Listener) -> bool:
        """The pieces cut as :meth:`receive` cuts them, handed on as they come."""
        paused = False

        def cut(piece: str) -> bool:
            nonlocal paused
            text = self._cutter.feed(piece)
            if self._cutter.stopped:
                self._ended = True
                self.usage.finish_reason = "stop"
            paused = bool(text) and bool(listener(text))
            return paused or self._ended

        while not self._ended:
            if await follow(self._tokens, cut):
                self._ended = True
                tail = self._cutter.finish()
                if tail and listener(tail):
                    return False
            elif paused:
                return False
        return True


def until_stop(tokens: TokenStream, stops: tuple[str, ...]) -> TokenStream:
    """``tokens`` cut at the first stop sequence (itself when there are none)."""
    return StoppedStream(tokens, stops) if stops else tokens


async def texts(tokens: TokenStream) -> AsyncIterator[str]:
    """Every piece of a token stream, in order, until its end (its errors propagate)."""
    while True:
        try:
            yield await tokens.receive()
        except anyio.EndOfStream:
            return


class EdgeBackend(Protocol):
    model_name: str
    model_sha256: str | None  # the model file's SHA-256, where the edge runs a file

    def stream(
        self, messages: list[Message], params: GenerationParams, prefix: str | None = None
    ) -> AbstractAsyncContextManager[TokenStream]:
        """``prefix``: continue an assistant answer that begins with it (verify mode's
        re-drafting); None: answer from scratch."""
        ...

    async def prewarm(self, messages: list[Message]) -> bool:
        """Evaluate this conversation's prompt ahead of its next turn, if the model is
        idle; whether it did."""
        ...


class CloudBackend(Protocol):
    model_name: str

    def stream(
        self, messages: list[Message], params: GenerationParams
    ) -> AbstractAsyncContextManager[TokenStream]: ...

    async def probe(self) -> dict[str, Any]:
        """``{"state": "up" | "down", "rtt_ms": ...}`` for readiness reports."""
        ...

    async def aclose(self) -> None: ...


class ScoringCloud(CloudBackend, Protocol):
    """A cloud that can check a draft (verify mode)."""

    async def score(self, messages: list[Message], continuation: str) -> Scored:
        """Each token of ``continuation`` with the cloud's top choices at its position."""
        ...

    def continue_from(
        self, messages: list[Message], prefix: str, params: GenerationParams
    ) -> AbstractAsyncContextManager[TokenStream]: ...
