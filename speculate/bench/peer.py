"""Suite 7: against a peer gateway — LiteLLM's SDK and speculate, in front of the same
cloud stand-in, side by side with calling the stand-in directly.

All three stream the same greedy answer (same prompt, same model, temperature 0),
interleaved.  Reported: time to the first content chunk and time per token after it,
each as the difference from the direct call.  speculate is asked with model
``speculate-cloud`` on its OpenAI-compatible endpoint, so it relays the cloud answer
(append-only, whole words) as LiteLLM does.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx

from speculate.backends import models
from speculate.backends.llamacpp import LlamaCppEdge, default_threads
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.backends.standin import StandInServer
from speculate.bench.inprocess import quiet_settings, serving
from speculate.engine.context import Backends

PROMPT = [{"role": "user", "content": "Explain in three sentences why the sky is blue."}]


async def _timed(pieces: AsyncIterator[str]) -> tuple[float, float, int]:
    started, first, count = time.perf_counter(), None, 0
    async for _ in pieces:
        if first is None:
            first = time.perf_counter() - started
        count += 1
    total = time.perf_counter() - started
    return first or total, total, count


async def _openai_stream(client: httpx.AsyncClient, url: str, model: str) -> AsyncIterator[str]:
    body = {"model": model, "messages": PROMPT, "max_tokens": 64, "temperature": 0, "stream": True}
    async with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:]).get("choices", []):
                    if choice["delta"].get("content"):
                        yield choice["delta"]["content"]


async def _litellm_stream(url: str) -> AsyncIterator[str]:
    # LiteLLM fetches a price list from GitHub on import unless told to use its own copy.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    response = await litellm.acompletion(
        model="openai/standin",
        api_base=url,
        api_key="unused",
        messages=PROMPT,
        max_tokens=64,
        temperature=0,
        stream=True,
    )
    async for chunk in response:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


def run(rounds: int = 10) -> dict[str, Any]:
    settings = quiet_settings()
    path = models.resolve(settings.edge.model)
    edge = LlamaCppEdge(path, model_name=settings.edge.model, n_threads=default_threads())
    standin = StandInServer(path, alias="standin", n_threads=default_threads())
    samples: dict[str, list[tuple[float, float, int]]] = {
        "direct": [],
        "litellm": [],
        "speculate": [],
    }

    async def main() -> None:
        base = await standin.start()
        try:
            cloud = OpenAICompatCloud(settings.cloud, base_url=base, model="standin")
            with serving(Backends(edge, cloud), settings) as url:
                async with httpx.AsyncClient(timeout=120) as client:
                    for i in range(rounds + 1):  # the first round warms everything up
                        direct = await _timed(_openai_stream(client, base, "standin"))
                        peer = await _timed(_litellm_stream(base))
                        ours = await _timed(_openai_stream(client, f"{url}/v1", "speculate-cloud"))
                        if i:
                            samples["direct"].append(direct)
                            samples["litellm"].append(peer)
                            samples["speculate"].append(ours)
        finally:
            await standin.stop()

    anyio.run(main)
    rows = []
    # Chunks differ (speculate sends whole words), the answer does not: divide every
    # path's streaming time by the tokens the direct call produced.
    tokens = statistics.median([s[2] for s in samples["direct"]])
    direct_first = [s[0] for s in samples["direct"]]
    direct_per_token = [(s[1] - s[0]) / max(1, tokens - 1) for s in samples["direct"]]
    for name, values in samples.items():
        firsts = [s[0] for s in values]
        per_token = [(s[1] - s[0]) / max(1, tokens - 1) for s in values]
        rows.append(
            {
                "path": name,
                "first_chunk_ms_p50": round(statistics.median(firsts) * 1000, 2),
                "added_first_ms_p50": round(
                    statistics.median([a - b for a, b in zip(firsts, direct_first, strict=True)])
                    * 1000,
                    2,
                ),
                "per_token_ms_p50": round(statistics.median(per_token) * 1000, 3),
                "added_per_token_ms_p50": round(
                    statistics.median(
                        [a - b for a, b in zip(per_token, direct_per_token, strict=True)]
                    )
                    * 1000,
                    3,
                ),
                "chunks_p50": statistics.median([s[2] for s in values]),
            }
        )
    return {"rounds": rounds, "rows": rows}
