"""Suite 4: correction latency — from the cloud's last token to the client holding the
final patch and ``done``.

A fake cloud stamps the moment it hands over its last token; an SSE client in the same
process (same clock) stamps the arrival of ``done``.  The edge drafts faster than the
cloud, so the final correction is a real splice, not an append.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from speculate.backends.base import GenerationParams
from speculate.bench.fake import FakeBackend, FakeStream
from speculate.bench.inprocess import serving
from speculate.core.chat import Message
from speculate.core.protocol import SSEDecoder, decode_event
from speculate.engine.context import Backends


@dataclass
class _StampedStream(FakeStream):
    stamps: dict[str, float] = field(default_factory=dict)
    key: str = ""

    async def receive(self) -> str:
        word = await super().receive()
        if self.sent == len(self.words):
            self.stamps[self.key] = time.perf_counter()
        return word


@dataclass
class StampedCloud(FakeBackend):
    stamps: dict[str, float] = field(default_factory=dict)

    @asynccontextmanager
    async def stream(
        self, messages: list[Message], params: GenerationParams, prefix: str | None = None
    ) -> AsyncIterator[FakeStream]:
        async with super().stream(messages, params) as plain:
            yield _StampedStream(
                plain.words, plain.delay_s, stamps=self.stamps, key=messages[-1]["content"]
            )


def run(requests: int = 40, max_tokens: int = 60) -> dict[str, Any]:
    cloud = StampedCloud("fake-cloud", tokens_per_s=150, seed=2)
    backends = Backends(edge=FakeBackend("fake-edge", 400, 1), cloud=cloud)
    latencies: list[float] = []

    async def main(url: str) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            for i in range(requests + 3):
                prompt = f"question {i}"
                body = {
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                    "mode": "speculative",
                }
                async with client.stream("POST", f"{url}/v1/speculate", json=body) as response:
                    decoder = SSEDecoder()
                    async for text in response.aiter_text():
                        for message in decoder.feed(text):
                            if message.event == "done":
                                arrived = time.perf_counter()
                                assert decode_event(message.data).type == "done"
                if i >= 3:  # three warm-up requests
                    latencies.append(arrived - cloud.stamps[prompt])

    with serving(backends) as url:
        anyio.run(main, url)
    ordered = sorted(latencies)
    return {
        "requests": requests,
        "correction_latency_ms_p50": round(statistics.median(latencies) * 1000, 3),
        "correction_latency_ms_p99": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 3),
    }
