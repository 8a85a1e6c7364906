"""Scripted backends: for testing our own orchestration logic, not the models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from speculate.backends.base import GenerationParams
from speculate.bench.fake import FakeStream
from speculate.core.chat import Message
from speculate.errors import CloudUnreachable, SpeculateError

ScriptedStream = FakeStream  # the same fixed-schedule stream the benchmarks use


@dataclass
class ScriptedBackend:
    model_name: str
    pieces: list[str]
    delay_s: float = 0.0
    error: SpeculateError | None = None
    gaps: list[float] | None = None
    entropy: list[float] | None = None
    opened: int = 0
    closed: int = 0
    streams: list[ScriptedStream] = field(default_factory=list)
    model_sha256: str | None = None
    asked: list[list[Message]] = field(default_factory=list)
    given: list[GenerationParams] = field(default_factory=list)  # each stream's parameters

    async def prewarm(self, messages: list[Message]) -> bool:
        return False  # a script has no prompt to evaluate ahead

    @asynccontextmanager
    async def stream(
        self, messages: list[Message], params: GenerationParams, prefix: str | None = None
    ) -> AsyncIterator[ScriptedStream]:
        self.opened += 1
        self.asked.append(messages)
        self.given.append(params)
        pieces = list(self.pieces)
        if prefix:  # continue an answer that begins with prefix: what follows it
            written = ""
            while pieces and len(written) < len(prefix):
                written += pieces.pop(0)
        stream = FakeStream(
            pieces,
            self.delay_s,
            self.error,
            self.gaps,
            entropy=self.entropy if params.confidence_tokens else None,
        )
        self.streams.append(stream)
        try:
            async with stream:
                yield stream
        finally:
            self.closed += 1

    async def probe(self) -> dict[str, Any]:
        return {"state": "up", "rtt_ms": 0.0}

    async def aclose(self) -> None:
        pass


def words(text: str) -> list[str]:
    import re

    return re.findall(r"\S+\s*", text)


@dataclass
class Script:
    """What each side answers to one prompt, and how fast."""

    draft: str
    cloud: str
    draft_delay_s: float = 0.01
    cloud_delay_s: float = 0.03
    cloud_start_s: float = 0.0
    flaky: bool = False  # every other cloud call is refused (odd calls: 1st, 3rd, ...)
    cloud_calls: int = 0


@dataclass
class ScriptBook:
    """Answers chosen by the last user message (a prefix match); records what was asked."""

    scripts: dict[str, Script]
    default: Script
    asked: list[list[Message]] = field(default_factory=list)

    def lookup(self, messages: list[Message]) -> Script:
        prompt = messages[-1]["content"]
        for prefix, script in self.scripts.items():
            if prompt.startswith(prefix):
                return script
        return self.default


@dataclass
class BookBackend:
    """A scripted edge or cloud side whose answer depends on the prompt."""

    book: ScriptBook
    side: str
    model_name: str = "scripted"
    model_sha256: str | None = None

    async def prewarm(self, messages: list[Message]) -> bool:
        return False  # a script has no prompt to evaluate ahead

    @asynccontextmanager
    async def stream(
        self, messages: list[Message], params: GenerationParams, prefix: str | None = None
    ) -> AsyncIterator[ScriptedStream]:
        script = self.book.lookup(messages)
        if self.side == "edge":
            self.book.asked.append(messages)
            pieces = words(script.draft)
            written = ""
            while prefix and pieces and len(written) < len(prefix):  # continue after prefix
                written += pieces.pop(0)
            async with FakeStream(pieces, script.draft_delay_s) as stream:
                yield stream
        else:
            script.cloud_calls += 1
            if script.flaky and script.cloud_calls % 2:
                raise CloudUnreachable("scripted: the cloud is away")
            await anyio.sleep(script.cloud_start_s)  # the scripted network round trip
            async with FakeStream(words(script.cloud), script.cloud_delay_s) as stream:
                yield stream

    async def probe(self) -> dict[str, Any]:
        return {"state": "up", "rtt_ms": 1.0}

    async def aclose(self) -> None:
        pass
