"""The cloud stand-in behaves like vLLM under concurrent requests: it queues, never cuts."""

from __future__ import annotations

import anyio
import httpx
import pytest

from speculate.backends import models
from speculate.backends.base import GenerationParams, texts
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.backends.standin import StandInServer
from speculate.settings import CloudSettings

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Name three colours of the rainbow and describe each."}]


async def test_a_probe_during_a_stream_does_not_cut_the_answer_short() -> None:
    # n_batch 1: the reference call and the stream evaluate the prompt alike (exactness).
    standin = StandInServer(models.resolve("smollm2-135m"), alias="standin", n_threads=1, n_batch=1)
    await standin.start()
    cloud = OpenAICompatCloud(CloudSettings(), base_url=standin.base_url, model="standin")
    try:
        with anyio.fail_after(120):
            async with httpx.AsyncClient(timeout=60) as client:
                direct = await client.post(
                    f"{standin.base_url}/chat/completions",
                    json={
                        "model": "standin",
                        "messages": MESSAGES,
                        "max_tokens": 64,
                        "temperature": 0,
                    },
                )
            expected = direct.json()["choices"][0]["message"]["content"]
            pieces: list[str] = []
            params = GenerationParams(max_tokens=64, temperature=0.0)
            async with cloud.stream(MESSAGES, params) as tokens:
                pieces.append(await tokens.receive())
                async with anyio.create_task_group() as group:
                    group.start_soon(cloud.probe)  # waits for the model while we stream
                    pieces += [text async for text in texts(tokens)]
        assert "".join(pieces) == expected
    finally:
        await cloud.aclose()
        await standin.stop()


async def test_streamed_answers_end_with_usage_like_vllm() -> None:
    """The client asks for ``include_usage``; the stand-in reports what it evaluated."""
    standin = StandInServer(models.resolve("smollm2-135m"), alias="standin", n_threads=1)
    await standin.start()
    cloud = OpenAICompatCloud(CloudSettings(), base_url=standin.base_url, model="standin")
    try:
        with anyio.fail_after(120):
            async with cloud.stream(MESSAGES, GenerationParams(12, 0.0)) as tokens:
                pieces = [text async for text in texts(tokens)]
        assert tokens.usage.completion_tokens == len(pieces) == 12
        assert tokens.usage.prompt_tokens > len(MESSAGES[0]["content"].split())
    finally:
        await cloud.aclose()
        await standin.stop()
