"""A fast scripted backend for load tests: words at a fixed rate, no model.

Used where the thing under test is our own server (soak, capacity), never where a
model's behaviour matters.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from speculate.backends.base import GenerationParams, Listener, TokenChannel, Usage
from speculate.core.chat import Message
from speculate.errors import SpeculateError

WORDS = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wise",
    "owls",
    "watch",
    "from",
    "an",
    "old",
    "oak",
    "tree",
    "near",
    "the",
    "quiet",
    "river",
    "under",
    "a",
    "pale",
    "morning",
    "sky",
)


@dataclass
class FakeStream:
    """Hands out ``words`` on a fixed schedule, like a model decoding on its own thread:
    a receive that is cancelled never pushes later words back.  Followed, the words come
    from loop timers into a :class:`~speculate.backends.base.TokenChannel`, as a model's
    thread hands its tokens over (a callback on the loop each, no task of its own).

    ``delay_s`` spaces the words evenly; ``gaps`` gives each word its own delay instead.
    ``error`` is raised after the last word in place of the normal end."""

    words: list[str]
    delay_s: float = 0.0
    error: SpeculateError | None = None
    gaps: list[float] | None = None
    usage: Usage = field(default_factory=Usage)
    entropy: list[float] | None = None  # per word, reported as a model's would be
    sent: int = 0
    started: float | None = None

    def __post_init__(self) -> None:
        gaps = self.gaps if self.gaps is not None else [self.delay_s] * len(self.words)
        self._due = list(itertools.accumulate(gaps))
        self._pushed: TokenChannel | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _next_word(self) -> str:
        self.sent += 1
        self.usage.completion_tokens = self.sent
        if self.entropy is not None:
            self.usage.extra.setdefault("entropy", []).append(self.entropy[self.sent - 1])
        return self.words[self.sent - 1]

    async def receive(self) -> str:
        if self._pushed is not None:
            return await self._pushed.receive()
        if self.sent >= len(self.words):
            if self.error is not None:
                raise self.error
            raise anyio.EndOfStream
        if self.started is None:
            self.started = anyio.current_time()
        await anyio.sleep_until(self.started + self._due[self.sent])
        return self._next_word()

    async def follow(self, listener: Listener) -> bool:
        if self._pushed is None:
            self._pushed = TokenChannel(self.usage)
            if self.started is None:
                self.started = asyncio.get_running_loop().time()  # anyio's current_time
            self._schedule()
        return await self._pushed.follow(listener)

    def _schedule(self) -> None:
        assert self._pushed is not None
        assert self.started is not None
        if self.sent >= len(self.words):
            self._pushed.end(self.error)
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(self.started + self._due[self.sent], self._push)

    def _push(self) -> None:
        assert self._pushed is not None
        self._pushed.put(self._next_word())
        self._schedule()

    async def __aenter__(self) -> FakeStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """The stream's reader has gone: the words' timers stop."""
        if self._timer is not None:
            self._timer.cancel()


@dataclass
class FakeBackend:
    """Answers ``max_tokens`` words at ``tokens_per_s``; ``seed`` varies the wording so
    an edge and a cloud fake disagree in places, as real models do."""

    model_name: str = "fake"
    tokens_per_s: float = 200.0
    seed: int = 0
    model_sha256: str | None = None

    @asynccontextmanager
    async def stream(
        self, messages: list[Message], params: GenerationParams, prefix: str | None = None
    ) -> AsyncIterator[FakeStream]:
        rng = random.Random(f"{self.seed}:{messages[-1]['content']}")
        words = [
            (" " if i else "")
            + (rng.choice(WORDS) if rng.random() < 0.2 else WORDS[i % len(WORDS)])
            for i in range(params.max_tokens)
        ]
        async with FakeStream(words, 1 / self.tokens_per_s) as stream:
            yield stream

    async def prewarm(self, messages: list[Message]) -> bool:
        return False  # nothing to evaluate ahead

    async def probe(self) -> dict[str, Any]:
        return {"state": "up", "rtt_ms": 0.0}

    async def aclose(self) -> None:
        pass
