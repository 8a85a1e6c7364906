"""Scripted backends: for testing our own orchestration logic, not the models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from speculate.backends.base import GenerationParams, Message, Usage
from speculate.errors import SpeculateError


@dataclass
class ScriptedStream:
    pieces: list[str]
    delay_s: float
    error: SpeculateError | None
    usage: Usage = field(default_factory=Usage)
    sent: int = 0

    async def receive(self) -> str:
        await anyio.sleep(self.delay_s)  # the scripted token rate
        if self.sent < len(self.pieces):
            self.sent += 1
            return self.pieces[self.sent - 1]
        if self.error is not None:
            raise self.error
        raise anyio.EndOfStream


@dataclass
class ScriptedBackend:
    model_name: str
    pieces: list[str]
    delay_s: float = 0.0
    error: SpeculateError | None = None
    opened: int = 0
    closed: int = 0
    streams: list[ScriptedStream] = field(default_factory=list)

    @asynccontextmanager
    async def stream(
        self, messages: list[Message], params: GenerationParams
    ) -> AsyncIterator[ScriptedStream]:
        self.opened += 1
        stream = ScriptedStream(list(self.pieces), self.delay_s, self.error)
        self.streams.append(stream)
        try:
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
