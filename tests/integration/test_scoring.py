"""Verify mode's request shapes against a real llama_cpp.server (logits_all), pinning
down how its echo log-probabilities line up with the tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from speculate import models
from speculate.backends.base import GenerationParams, texts
from speculate.backends.chat_prompt import ChatPrompt
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.backends.scoring import LlamaCppScoring
from speculate.backends.standin import StandInServer
from speculate.core.verify import judge
from speculate.settings import CloudSettings

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Name three colours and say something about each."}]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def cloud() -> AsyncIterator[OpenAICompatCloud]:
    path = models.resolve("smollm2-135m")
    standin = StandInServer(path, alias="standin", n_threads=1)
    await standin.start()
    client = OpenAICompatCloud(CloudSettings(), base_url=standin.base_url, model="standin",
                               scoring=LlamaCppScoring(ChatPrompt.of_model(path)))  # fmt: skip
    yield client
    await client.aclose()
    await standin.stop()


async def greedy(cloud: OpenAICompatCloud, max_tokens: int) -> str:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(f"{cloud.base_url}/chat/completions", json={
            "model": "standin", "messages": MESSAGES, "max_tokens": max_tokens,
            "temperature": 0, "repeat_penalty": 1.0,  # greedy: the argmax
        })  # fmt: skip
    return str(response.json()["choices"][0]["message"]["content"])


@pytest.mark.anyio
async def test_each_echoed_token_is_scored_at_its_own_position(cloud: OpenAICompatCloud) -> None:
    answer = await greedy(cloud, 24)
    with anyio.fail_after(60):
        scored = await cloud.score(MESSAGES, answer)
    # The tokens spell the continuation exactly, from offset 0.
    assert "".join(t.text for t in scored.tokens) == answer
    assert scored.tokens[0].start == 0
    # The cloud's own greedy tokens are each its top choice *at their own index*: the
    # entry top_logprobs[i] holds token i. Shifted by one, they would not be.
    assert all(t.is_top for t in scored.tokens), [t for t in scored.tokens if not t.is_top]
    shifted = [
        t.text == nxt.top[0][0] for t, nxt in zip(scored.tokens, scored.tokens[1:], strict=False)
    ]
    assert not all(shifted)
    assert len(scored.tokens) == 24
    # And the token it generates after them is greedy's 25th.
    assert answer + scored.next_text == await greedy(cloud, 25)
    assert scored.prompt_tokens > 24


@pytest.mark.anyio
async def test_a_wrong_word_is_replaced_by_the_clouds_own_token(cloud: OpenAICompatCloud) -> None:
    answer = await greedy(cloud, 24)
    words = answer.split(" ")
    cut = len(" ".join(words[:3]))
    draft = answer[:cut] + " zebra" + answer[cut:]
    with anyio.fail_after(60):
        verdict = judge(await cloud.score(MESSAGES, draft), budget=24)
    assert verdict.accepted_chars <= cut + 1
    assert answer.startswith(draft[: verdict.accepted_chars] + verdict.correction)
    assert verdict.correction
    assert verdict.rejected_tokens >= 2


@pytest.mark.anyio
async def test_continuing_from_an_accepted_prefix_gives_the_greedy_answer(
    cloud: OpenAICompatCloud,
) -> None:
    answer = await greedy(cloud, 24)
    with anyio.fail_after(60):
        scored = await cloud.score(MESSAGES, answer[:20])
        verdict = judge(scored, budget=24)
        prefix = answer[:20][: verdict.accepted_chars] + verdict.correction
        used = verdict.accepted_tokens + verdict.correction_tokens
        params = GenerationParams(max_tokens=24 - used, temperature=0.0)
        async with cloud.continue_from(MESSAGES, prefix, params) as tokens:
            continued = "".join([text async for text in texts(tokens)])
    assert prefix + continued == answer
