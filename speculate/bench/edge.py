"""Suites 1 and 2: the server against llama-cpp-python called in-process.

Same model file, prompt, sampling and thread count, measured side by side in one
run and interleaved (direct, SSE, WebSocket, direct, ...) so machine noise hits
every column alike.  The server runs as a child process with the cloud disabled,
so only the edge path is timed.

1. Time to first draft token: the per-request difference ``server - direct``.
   The SSE column is read by a lean client (:mod:`speculate.bench.lean_sse`), so that
   what is added is the server's; ``sse_httpx`` is the same request through httpx, whose
   own per-request cost shows beside it.  The floor, in the same rounds: the capacity
   suite's minimal app (:class:`~speculate.bench.children.MinimalServer`, same uvicorn
   settings, nothing to compute) answering the same clients with its first frame; what
   speculate adds beyond it (``own_median_ms``) is its own work and the model's thread
   hand-offs, the rest is the socket and the two ends' libraries.
2. Relay efficiency: tokens per second reaching the client (first draft event to
   ``done``) over the model's own rate (first to last token), greedy so both sides
   produce the same tokens.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import anyio
import httpx
import websockets

from speculate.backends import models
from speculate.backends.llamacpp import default_threads
from speculate.bench.children import MinimalServer, SpeculateServer
from speculate.bench.lean_sse import LeanSSE
from speculate.client import ws_url
from speculate.core.protocol import SSEDecoder, decode_event
from speculate.settings import Settings

PROMPT = [{"role": "user", "content": "Write one sentence about the sea."}]
LONG_PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


PATHS = ("direct", "sse", "ws", "sse_httpx", "floor_sse", "floor_ws")
FLOOR_OF = {"sse": "floor_sse", "ws": "floor_ws", "sse_httpx": "floor_sse"}


def round_order(i: int) -> list[str]:
    """Round ``i``'s paths: the floors first (they run no model), then the model paths
    rotated.  llama.cpp's threads spin a while after each answer, so whichever path runs
    right after another one's decode pays for it: rotated, each model path comes first
    after the floors (the only place no decode precedes it) equally often."""
    floors = ["floor_sse", "floor_ws"] if i % 2 else ["floor_ws", "floor_sse"]
    models = [name for name in PATHS if name not in floors]
    turn = i % len(models)
    return floors + models[turn:] + models[:turn]


def ttft_rows(ttft: dict[str, list[float]]) -> dict[str, dict[str, float | None]]:
    """Medians per path (seconds in, ms out), each server path's time added to the
    direct call's in the same round, and what it adds beyond its transport's floor in
    the same round (``own``)."""
    rows = {}
    for name, values in ttft.items():
        row: dict[str, float | None] = {
            "median_ms": round(statistics.median(values) * 1000, 3),
            "p99_ms": round(percentile(values, 0.99) * 1000, 3),
            "added_median_ms": None,
            "added_p99_ms": None,
            "own_median_ms": None,
        }
        if name in FLOOR_OF:
            added = [(v - d) * 1000 for v, d in zip(values, ttft["direct"], strict=True)]
            row["added_median_ms"] = round(statistics.median(added), 3)
            row["added_p99_ms"] = round(percentile(added, 0.99), 3)
            floor = ttft[FLOOR_OF[name]]
            own = [a - f * 1000 for a, f in zip(added, floor, strict=True)]
            row["own_median_ms"] = round(statistics.median(own), 3)
        rows[name] = row
    return rows


class EdgeServer(SpeculateServer):
    """``speculate serve`` in a child process, cloud disabled."""

    def __init__(self, config: str | None, threads: int) -> None:
        env = {"SPECULATE_CLOUD__ENABLED": "false", "SPECULATE_EDGE__N_THREADS": str(threads)}
        super().__init__(env, config)


def run(
    *,
    requests: int = 30,
    relay_runs: int = 5,
    relay_tokens: int = 128,
    config: str | None = None,
    max_tokens: int = 8,
) -> dict[str, Any]:
    from llama_cpp import Llama

    settings = Settings.load(config)
    threads = settings.edge.n_threads or default_threads()
    path = models.resolve(settings.edge.model)
    llama: Any = Llama(
        model_path=str(path), n_ctx=settings.edge.n_ctx, n_threads=threads, verbose=False
    )

    def direct(messages: list[dict[str, str]], tokens: int, temperature: float) -> list[float]:
        """Arrival time of every token, relative to the call."""
        started, stamps = time.perf_counter(), []
        for chunk in llama.create_chat_completion(
            messages=messages,
            stream=True,
            max_tokens=tokens,
            temperature=temperature,
            top_p=settings.edge.top_p,
        ):
            if chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter() - started)
        return stamps

    async def via_sse(
        client: httpx.AsyncClient, url: str, body: dict[str, Any]
    ) -> tuple[float, float, float, int]:
        """First and last draft arrival, end of the response (s), and tokens drafted."""
        started, first, last, tokens = time.perf_counter(), None, 0.0, 0
        async with client.stream("POST", f"{url}/v1/speculate", json=body) as response:
            decoder = SSEDecoder()
            async for text in response.aiter_text():
                for message in decoder.feed(text):
                    if message.event == "draft":
                        last = time.perf_counter() - started
                        first = last if first is None else first
                    if message.event == "done":
                        tokens = int(json.loads(message.data)["stats"]["draft_tokens"])
        assert first is not None
        return first, last, time.perf_counter() - started, tokens

    async def via_lean(client: LeanSSE, body: dict[str, Any], first_of: str = "draft") -> float:
        started, first = time.perf_counter(), None
        async for message in client.post("/v1/speculate", body):
            if message.event == first_of and first is None:
                first = time.perf_counter() - started
        assert first is not None
        return first

    async def via_ws(
        socket: websockets.ClientConnection, body: dict[str, Any], first_of: str = "draft"
    ) -> float:
        started, first = time.perf_counter(), None
        await socket.send(json.dumps({"type": "speculate", **body}))
        while True:
            event = decode_event(str(await socket.recv()))
            if event.type == first_of and first is None:
                first = time.perf_counter() - started
            if event.type in ("done", "error"):
                assert first is not None
                return first

    ttft: dict[str, list[float]] = {name: [] for name in PATHS}
    relay: dict[str, list[float]] = {"direct": [], "server": [], "server_to_close": []}
    short = {"messages": PROMPT, "mode": "edge", "max_tokens": max_tokens}
    long = {"messages": LONG_PROMPT, "mode": "edge", "max_tokens": relay_tokens, "temperature": 0.0}

    async def measure(url: str, minimal: str) -> None:
        async with (
            httpx.AsyncClient(timeout=120) as client,
            LeanSSE(url) as lean,
            websockets.connect(ws_url(url), compression=None) as socket,
            LeanSSE(minimal) as lean_floor,
            websockets.connect(ws_url(minimal), compression=None) as socket_floor,
        ):

            async def first_direct() -> float:
                stamps = await anyio.to_thread.run_sync(
                    direct, PROMPT, max_tokens, settings.edge.temperature
                )
                return stamps[0]

            async def first_sse() -> float:
                return await via_lean(lean, short)

            async def first_httpx() -> float:
                return (await via_sse(client, url, short))[0]

            async def first_ws() -> float:
                return await via_ws(socket, short)

            async def first_floor_sse() -> float:
                return await via_lean(lean_floor, short, first_of="start")

            async def first_floor_ws() -> float:
                return await via_ws(socket_floor, short, first_of="start")

            paths = {
                "direct": first_direct,
                "sse": first_sse,
                "ws": first_ws,
                "sse_httpx": first_httpx,
                "floor_sse": first_floor_sse,
                "floor_ws": first_floor_ws,
            }
            for i in range(requests + 2):  # two warm-up rounds, not recorded
                firsts = {name: await paths[name]() for name in round_order(i)}
                if i >= 2:
                    for name, first in firsts.items():
                        ttft[name].append(first)
            for _ in range(relay_runs):
                stamps = await anyio.to_thread.run_sync(direct, LONG_PROMPT, relay_tokens, 0.0)
                relay["direct"].append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
                # Like the direct side: first to last token. The close (commit, done, end
                # of the response) is latency once per answer, reported apart.
                first, last, end, tokens = await via_sse(client, url, long)
                relay["server"].append((tokens - 1) / (last - first))
                relay["server_to_close"].append((tokens - 1) / (end - first))

    with EdgeServer(config, threads) as server, MinimalServer() as floor:
        anyio.run(measure, server.url, floor.url)

    rows = ttft_rows(ttft)
    direct_rate = statistics.median(relay["direct"])
    server_rate = statistics.median(relay["server"])
    to_close = statistics.median(relay["server_to_close"])
    return {
        "model": path.name,
        "threads": threads,
        "requests": requests,
        "ttft": rows,
        "ttft_samples_ms": {k: [round(v * 1000, 3) for v in vs] for k, vs in ttft.items()},
        "relay": {
            "runs": relay_runs,
            "tokens": relay_tokens,
            "direct_tokens_per_s": round(direct_rate, 1),
            "server_tokens_per_s": round(server_rate, 1),
            "efficiency": round(server_rate / direct_rate, 4),
            "efficiency_to_close": round(to_close / direct_rate, 4),
        },
    }
