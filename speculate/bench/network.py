"""Suite 8: where speculation wins — first and final text as the cloud gets farther away.

A delay proxy on loopback adds a round-trip time (0, 30, 100, 300 ms: half each way, on
every chunk, order kept) between the server and the cloud stand-in.  For each RTT the
same prompts are asked in modes ``speculative``, ``verify``, ``cloud`` and ``edge``;
the client records when it first sees text and when it has the final answer.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from anyio.abc import SocketStream

from speculate.backends import models
from speculate.backends.llamacpp import LlamaCppEdge, default_threads
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.backends.scoring import VLLMScoring
from speculate.backends.standin import StandInServer
from speculate.bench.cores import split_off_one_core
from speculate.bench.inprocess import quiet_settings, serving
from speculate.core.protocol import SSEDecoder
from speculate.engine.context import Backends

PROMPTS = [
    "What is the capital of France?",
    "Give one tip for better sleep.",
    "Name a planet and say one fact about it.",
]


class DelayProxy:
    """Forwards TCP to ``target_port`` with ``one_way_s`` added in each direction."""

    def __init__(self, target_port: int, one_way_s: float) -> None:
        self.target_port = target_port
        self.one_way_s = one_way_s

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started(port)
        await listener.serve(self._handle)

    async def _handle(self, client: SocketStream) -> None:
        upstream = await anyio.connect_tcp("127.0.0.1", self.target_port)
        async with client, upstream, anyio.create_task_group() as group:
            group.start_soon(self._pipe, client, upstream, group)
            group.start_soon(self._pipe, upstream, client, group)

    async def _pipe(self, source: SocketStream, sink: SocketStream, group: Any) -> None:
        send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](1000)

        async def deliver() -> None:
            async for due, data in receive:
                await anyio.sleep_until(due)
                await sink.send(data)

        async with anyio.create_task_group() as inner:
            inner.start_soon(deliver)
            try:
                async with send:
                    while True:
                        data = await source.receive()
                        await send.send((anyio.current_time() + self.one_way_s, data))
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        group.cancel_scope.cancel()


@dataclass(frozen=True, slots=True)
class Answer:
    first_s: float  # until the client first sees text
    final_s: float  # until it has the final answer
    stats: dict[str, Any]  # the done event's


async def ask(
    client: httpx.AsyncClient, url: str, prompt: str, mode: str, max_tokens: int = 48
) -> Answer:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "mode": mode,
        "max_tokens": max_tokens,
    }
    started, first, stats = time.perf_counter(), None, {}
    async with client.stream("POST", f"{url}/v1/speculate", json=body) as response:
        decoder = SSEDecoder()
        async for text in response.aiter_text():
            for message in decoder.feed(text):
                if first is None and message.event in ("draft", "patch"):
                    first = time.perf_counter() - started
                if message.event == "done":
                    stats = json.loads(message.data)["stats"]
    final = time.perf_counter() - started
    return Answer(first if first is not None else final, final, stats)


Row = Callable[[int, str, list[Answer]], dict[str, Any]]


def run_modes(
    rtts_ms: tuple[int, ...],
    modes: tuple[str, ...],
    row: Row,
    max_tokens: int = 48,
    repeats: int = 1,
    cloud_elsewhere: bool = False,
) -> list[dict[str, Any]]:
    """Ask every prompt in every mode behind every RTT; one ``row(rtt, mode, answers)``
    each.  Real models: SmolLM2 edge, a SmolLM2 stand-in that can score drafts.
    ``cloud_elsewhere``: the stand-in on a core of its own (:mod:`speculate.bench.cores`)."""
    settings = quiet_settings()
    path = models.resolve(settings.edge.model)
    edge = LlamaCppEdge(path, model_name=settings.edge.model, n_threads=default_threads())
    standin = StandInServer(path, alias="standin", n_threads=default_threads())
    scoring = VLLMScoring()  # the stand-in answers vLLM's prompt_logprobs shape
    rows: list[dict[str, Any]] = []

    async def main() -> None:
        await standin.start()
        try:
            with contextlib.ExitStack() as cores:
                if cloud_elsewhere and standin.process is not None:
                    cores.enter_context(split_off_one_core(standin.process.pid))
                await ask_all()
        finally:
            await standin.stop()

    async def ask_all() -> None:
        for rtt in rtts_ms:
            proxy = DelayProxy(standin.port, rtt / 2000)
            async with anyio.create_task_group() as group:
                port = await group.start(proxy.serve)
                cloud = OpenAICompatCloud(
                    settings.cloud,
                    base_url=f"http://127.0.0.1:{port}/v1",
                    model="standin",
                    scoring=scoring,
                )
                with serving(Backends(edge, cloud), settings) as url:
                    async with httpx.AsyncClient(timeout=120) as client:
                        for mode in modes:  # warm-up
                            await ask(client, url, PROMPTS[-1], mode, max_tokens)
                        # Rounds, so that a slow spell of the machine hits every mode;
                        # never the same prompt twice in a row (the stand-in's and the
                        # edge's prefix caches would answer it early).
                        answers: dict[str, list[Answer]] = {mode: [] for mode in modes}
                        for _ in range(repeats):
                            for mode in modes:
                                for prompt in PROMPTS:
                                    answer = await ask(client, url, prompt, mode, max_tokens)
                                    answers[mode].append(answer)
                        rows.extend(row(rtt, mode, answers[mode]) for mode in modes)
                group.cancel_scope.cancel()

    anyio.run(main)
    return rows


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def stopped(answers: list[Answer], reason: str) -> int:
    return sum(1 for a in answers if a.stats.get("edge_stopped") == reason)


def run(
    rtts_ms: tuple[int, ...] = (0, 30, 100, 300), *, cloud_elsewhere: bool = False
) -> list[dict[str, Any]]:
    def row(rtt: int, mode: str, answers: list[Answer]) -> dict[str, Any]:
        return {
            "rtt_ms": rtt,
            "mode": mode,
            "first_text_ms": median_ms([a.first_s for a in answers]),
            "final_ms": median_ms([a.final_s for a in answers]),
            # Of the answers, how many stopped the edge early, and why (speculative only).
            "edge_stopped_covered": stopped(answers, "overtaken by the cloud"),
            "edge_stopped_faster": stopped(answers, "the cloud writes faster"),
        }

    modes = ("speculative", "verify", "cloud", "edge")
    return run_modes(rtts_ms, modes, row, repeats=2, cloud_elsewhere=cloud_elsewhere)
