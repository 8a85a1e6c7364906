"""Verify mode's two request shapes against the real stand-in (llama_cpp.server with
logits_all): vLLM's ``prompt_logprobs`` (the stand-in's own scoring route) and llama.cpp's
``echo`` log-probabilities, pinning down how each lines up with the tokens.

Exactness needs the reference and the check to compute alike: the stand-in runs with
``n_batch 1``, so a prompt is evaluated like generated tokens. With llama.cpp's default
batch, a repeated greedy call is not even equal to the first one on some CPUs: the first
evaluates the prompt's last token inside a batch, a repeat re-evaluates it alone (prefix
cache hit), and the two logits rows differ in the low bits (``scripts/bench numerics``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from speculate.backends import models
from speculate.backends.base import GenerationParams, texts
from speculate.backends.chat_prompt import ChatPrompt
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.backends.scoring import LlamaCppScoring, VLLMScoring
from speculate.backends.standin import StandInServer
from speculate.core.verify import judge
from speculate.settings import CloudSettings

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Name three colours and say something about each."}]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[StandInServer]:
    server = StandInServer(models.resolve("smollm2-135m"), alias="standin", n_threads=1, n_batch=1)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module", params=["vllm", "llamacpp"])
async def cloud(
    request: pytest.FixtureRequest, standin: StandInServer
) -> AsyncIterator[OpenAICompatCloud]:
    scoring = (
        VLLMScoring()
        if request.param == "vllm"
        else LlamaCppScoring(ChatPrompt.of_model(standin.model_path))
    )
    client = OpenAICompatCloud(
        CloudSettings(), base_url=standin.base_url, model="standin", scoring=scoring
    )
    yield client
    await client.aclose()


async def greedy(cloud: OpenAICompatCloud, max_tokens: int) -> str:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(
            f"{cloud.base_url}/chat/completions",
            json={
                "model": "standin",
                "messages": MESSAGES,
                "max_tokens": max_tokens,
                "temperature": 0,
                "repeat_penalty": 1.0,  # greedy: the argmax
            },
        )
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
