"""Added time to first draft token: through the server vs llama-cpp-python in-process.

Same model file, same prompt, same sampling, same thread count, measured side by side
in one run and interleaved (direct, SSE, WebSocket, direct, ...) so that machine
noise hits every column alike.  The server runs as a child process with the cloud
disabled, so only the edge path is timed; the figure is the per-request difference
``server_ttft - direct_ttft``, reported as median and p99.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import websockets
from rich.console import Console
from rich.table import Table

from speculate import models
from speculate.backends.llamacpp import default_threads
from speculate.backends.standin import free_port
from speculate.client import ws_url
from speculate.core.protocol import SSEDecoder, decode_event
from speculate.settings import Settings

PROMPT = [{"role": "user", "content": "Write one sentence about the sea."}]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


class _Server:
    def __init__(self, config: str | None, threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "speculate.cli", "serve", "--port", str(self.port)]
        if config:
            command += ["--config", config]
        env = {
            **os.environ,
            "SPECULATE_CLOUD__ENABLED": "false",
            "SPECULATE_EDGE__N_THREADS": str(threads),
            "SPECULATE_STREAM__COALESCE_MS": "16",
        }
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the benchmark server exited during start-up")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # bounded start-up poll
        raise RuntimeError("the benchmark server did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_ttft_bench(
    *, requests: int = 30, config: str | None = None, max_tokens: int = 8, json_out: bool = False
) -> int:
    from llama_cpp import Llama

    settings = Settings.load(config)
    threads = settings.edge.n_threads or default_threads()
    console = Console(stderr=json_out)
    path = models.resolve(settings.edge.model)
    console.print(f"loading {path.name} in-process ({threads} threads) and starting the server…")
    llama: Any = Llama(
        model_path=str(path), n_ctx=settings.edge.n_ctx, n_threads=threads, verbose=False
    )
    server = _Server(config, threads)
    body = {"messages": PROMPT, "mode": "edge", "max_tokens": max_tokens}
    sampling = {"max_tokens": max_tokens, "temperature": settings.edge.temperature,
                "top_p": settings.edge.top_p}  # fmt: skip

    def direct() -> float:
        started = time.perf_counter()
        chunks = llama.create_chat_completion(messages=PROMPT, stream=True, **sampling)
        try:
            for chunk in chunks:
                if chunk["choices"][0]["delta"].get("content"):
                    return time.perf_counter() - started
        finally:
            for _ in chunks:  # finish like the server does, so both leave the same cache
                pass
        raise RuntimeError("the model produced no token")

    async def via_sse(client: httpx.AsyncClient) -> float:
        started = time.perf_counter()
        first: float | None = None
        async with client.stream("POST", f"{server.url}/v1/speculate", json=body) as response:
            decoder = SSEDecoder()
            async for text in response.aiter_text():
                for message in decoder.feed(text):
                    if message.event == "draft" and first is None:
                        first = time.perf_counter() - started
        assert first is not None
        return first

    async def via_ws(socket: websockets.ClientConnection) -> float:
        started = time.perf_counter()
        first: float | None = None
        await socket.send(json.dumps({"type": "speculate", **body}))
        while True:
            event = decode_event(str(await socket.recv()))
            if event.type == "draft" and first is None:
                first = time.perf_counter() - started
            if event.type in ("done", "error"):
                break
        assert first is not None
        return first

    samples: dict[str, list[float]] = {"direct": [], "sse": [], "ws": []}

    async def measure() -> None:
        async with (
            httpx.AsyncClient(timeout=60) as client,
            websockets.connect(ws_url(server.url), compression=None) as socket,
        ):
            for i in range(requests + 2):  # two warm-up rounds, not recorded
                d = await anyio.to_thread.run_sync(direct)
                s = await via_sse(client)
                w = await via_ws(socket)
                if i >= 2:
                    samples["direct"].append(d)
                    samples["sse"].append(s)
                    samples["ws"].append(w)

    try:
        server.wait_ready()
        anyio.run(measure)
    finally:
        server.stop()

    results: dict[str, Any] = {"machine": _machine(), "requests": requests, "model": path.name,
                               "threads": threads, "max_tokens": max_tokens}  # fmt: skip
    table = Table(title=f"time to first draft token, {requests} requests, {path.name}")
    for column in ("path", "median ms", "p99 ms", "added median ms", "added p99 ms"):
        table.add_column(column, justify="right")
    for name, values in samples.items():
        diffs = [(v - d) * 1000 for v, d in zip(values, samples["direct"], strict=True)]
        row = {
            "median_ms": round(statistics.median(values) * 1000, 3),
            "p99_ms": round(_percentile(values, 0.99) * 1000, 3),
            "added_median_ms": round(statistics.median(diffs), 3),
            "added_p99_ms": round(_percentile(diffs, 0.99), 3),
        }
        results[name] = row
        table.add_row(name, *(f"{row[k]:.2f}" for k in row))
    console.print(table)
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    target = out / f"ttft-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(results, indent=2))
    console.print(f"wrote {target}")
    summary = {
        "ttft_overhead_ms_p50": max(
            results["sse"]["added_median_ms"], results["ws"]["added_median_ms"]
        ),
        "ttft_overhead_sse_ms_p50": results["sse"]["added_median_ms"],
        "ttft_overhead_ws_ms_p50": results["ws"]["added_median_ms"],
    }
    if json_out:
        print(json.dumps(summary))
    return 0
