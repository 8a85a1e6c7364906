"""Suite 7: speculate against the gateway users deploy — LiteLLM's proxy — both in front
of the same cloud stand-in, side by side with calling the stand-in directly.

Every path streams the same greedy answer (same prompt, model, 32 tokens, temperature
0); rounds are interleaved, each round in a rotated order.  Each server is its own
process: the stand-in, ``litellm --config`` and ``speculate serve`` (its cloud pointed at
the stand-in).  Reported per path: time to the first content and to the whole answer,
and the median of each round's difference to the direct call.  speculate is measured
on ``/v1/chat/completions`` (model ``speculate-cloud``) and on ``/v1/speculate`` (mode
``cloud``, the first event that shows text).

The stand-in has a core of its own (:mod:`speculate.bench.cores`), the gateways and the
client share the rest: a real cloud runs elsewhere, and a gateway's own CPU must not be
counted as the cloud decoding slower next to it.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx

from speculate.backends import models
from speculate.backends.llamacpp import default_threads
from speculate.backends.standin import StandInServer
from speculate.bench.children import LITELLM_MASTER_KEY, LiteLLMProxy, SpeculateServer
from speculate.bench.cores import split_off_one_core
from speculate.bench.inprocess import quiet_settings

PROMPT = [{"role": "user", "content": "Explain in three sentences why the sky is blue."}]
MAX_TOKENS = 32
WARMUP_ROUNDS = 3
Samples = dict[str, list[tuple[float, float]]]  # path -> per round (first, whole), seconds


async def _timed(pieces: AsyncIterator[str]) -> tuple[float, float]:
    """Seconds to the first piece and to the end."""
    started, first = time.perf_counter(), None
    async for _ in pieces:
        if first is None:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    return first or total, total


async def _chat(
    client: httpx.AsyncClient, url: str, model: str, headers: dict[str, str] | None = None
) -> AsyncIterator[str]:
    body = {
        "model": model,
        "messages": PROMPT,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
    }
    async with client.stream(
        "POST", f"{url}/chat/completions", json=body, headers=headers
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:]).get("choices", []):
                    if choice["delta"].get("content"):
                        yield choice["delta"]["content"]


async def _events(client: httpx.AsyncClient, url: str) -> AsyncIterator[str]:
    body = {"messages": PROMPT, "mode": "cloud", "max_tokens": MAX_TOKENS, "temperature": 0}
    async with client.stream("POST", f"{url}/v1/speculate", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["event"] == "draft" and event["text"]:
                yield event["text"]
            elif event["event"] == "patch" and any(op["ins"] for op in event["ops"]):
                yield "".join(op["ins"] for op in event["ops"])


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def run(rounds: int = 20, cloud_elsewhere: bool = True) -> dict[str, Any]:
    path = models.resolve(quiet_settings().edge.model)
    standin = StandInServer(path, alias="standin", n_threads=default_threads())
    samples: Samples = {}
    pinned = False

    async def main() -> None:
        nonlocal pinned
        base = await standin.start()
        try:
            with contextlib.ExitStack() as cores:
                if cloud_elsewhere and standin.process is not None:
                    # Before the gateways start: they inherit this process's cores.
                    pinned = cores.enter_context(split_off_one_core(standin.process.pid))
                await measure(base)
        finally:
            await standin.stop()

    async def measure(base: str) -> None:
        speculate_env = {
            "SPECULATE_CLOUD__BASE_URL": base,
            "SPECULATE_CLOUD__MODEL": "standin",
            "SPECULATE_EDGE__N_THREADS": "1",
        }
        with (
            LiteLLMProxy(base, alias="cloud") as proxy,
            SpeculateServer(speculate_env) as ours,
        ):
            auth = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
            async with httpx.AsyncClient(timeout=120) as client:
                paths: dict[str, Callable[[], AsyncIterator[str]]] = {
                    "direct": lambda: _chat(client, base, "standin"),
                    "litellm_proxy": lambda: _chat(client, f"{proxy.url}/v1", "cloud", auth),
                    "speculate_chat": lambda: _chat(client, f"{ours.url}/v1", "speculate-cloud"),
                    "speculate_events": lambda: _events(client, ours.url),
                }
                names = list(paths)
                for name in names:
                    samples[name] = []
                for i in range(WARMUP_ROUNDS + rounds):
                    turn = i % len(names)
                    for name in names[turn:] + names[:turn]:  # rotate: no fixed position
                        measured = await _timed(paths[name]())
                        if i >= WARMUP_ROUNDS:
                            samples[name].append(measured)

    anyio.run(main)
    rows = peer_rows(samples)
    return {"rounds": rounds, "max_tokens": MAX_TOKENS, "cloud_on_own_core": pinned, "rows": rows}


def peer_rows(samples: Samples) -> list[dict[str, Any]]:
    """Per path: medians of its own times, and of each round's difference to the direct
    call in that round, with the interquartile range of those differences."""
    direct = samples["direct"]
    rows = []
    for name, values in samples.items():
        row: dict[str, Any] = {
            "path": name,
            "first_ms_p50": _ms(statistics.median(v[0] for v in values)),
            "whole_ms_p50": _ms(statistics.median(v[1] for v in values)),
        }
        for index, what in enumerate(("first", "whole")):
            differences = [v[index] - d[index] for v, d in zip(values, direct, strict=True)]
            row[f"added_{what}_ms_p50"] = _ms(statistics.median(differences))
            # How much the rounds' differences spread: what a median of them can resolve.
            low, _, high = statistics.quantiles(differences, n=4)
            row[f"added_{what}_ms_iqr"] = _ms(high - low)
        rows.append(row)
    return rows


def added(results: dict[str, Any], path: str, what: str = "first") -> float:
    row = next(r for r in results["rows"] if r["path"] == path)
    return float(row[f"added_{what}_ms_p50"])
