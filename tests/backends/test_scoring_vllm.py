"""vLLM's verify shape, against recorded answers that follow its documented schema
(vLLM needs a GPU, so it cannot run here): chat completions with the draft as an open
assistant message, ``prompt_logprobs`` as ``list[None | {token_id: {logprob, rank,
decoded_token}}]`` holding each prompt token and, when it was not the top choice, the
rank-1 token as well."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from speculate.backends.base import GenerationParams, texts
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.backends.scoring import VLLMScoring
from speculate.core.verify import judge
from speculate.errors import CloudProtocolError
from speculate.settings import CloudSettings

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
DRAFT = "Paris is the capital."


def entry(token_id: int, text: str, logprob: float, rank: int) -> dict[str, Any]:
    return {str(token_id): {"logprob": logprob, "rank": rank, "decoded_token": text}}


# The prompt's template tokens, then the draft: "Paris", " is", " the", " capital", "."
# At " the" the model preferred " a" (rank 1); every other draft token was its top choice.
RECORDED_SCORE = {
    "id": "chatcmpl-7f3",
    "object": "chat.completion",
    "created": 1764000000,
    "model": "meta-llama/Llama-3.3-70B-Instruct",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": " It"},
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 9, "total_tokens": 10, "completion_tokens": 1},
    "prompt_logprobs": [
        None,
        entry(882, "user", -11.2, 40),
        entry(271, "\n\n", -0.01, 1),
        entry(3923, "What is the capital of France?", -30.5, 1),
        entry(78191, "assistant", -0.2, 1),
        entry(60704, "Paris", -0.05, 1),
        entry(374, " is", -0.3, 1),
        {**entry(279, " the", -1.9, 2), **entry(264, " a", -0.4, 1)},
        entry(6864, " capital", -0.1, 1),
        entry(13, ".", -0.6, 1),
    ],
}


def recorded(answers: list[httpx.Response], seen: list[dict[str, Any]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append({"path": request.url.path, **json.loads(request.content)})
        return answers.pop(0)

    return httpx.MockTransport(handle)


def cloud(transport: httpx.MockTransport) -> OpenAICompatCloud:
    return OpenAICompatCloud(
        CloudSettings(),
        base_url="http://vllm.test/v1",
        model="llama",
        transport=transport,
        scoring=VLLMScoring(),
    )


async def test_a_draft_is_scored_with_prompt_logprobs_on_an_open_assistant_message() -> None:
    seen: list[dict[str, Any]] = []
    client = cloud(recorded([httpx.Response(200, json=RECORDED_SCORE)], seen))
    with anyio.fail_after(5):
        scored = await client.score(MESSAGES, DRAFT)
    await client.aclose()
    [request] = seen
    assert request["path"] == "/v1/chat/completions"
    assert request["messages"] == [*MESSAGES, {"role": "assistant", "content": DRAFT}]
    assert request["continue_final_message"] is True
    assert request["add_generation_prompt"] is False
    assert (request["prompt_logprobs"], request["max_tokens"], request["temperature"]) == (1, 1, 0)
    assert [t.text for t in scored.tokens] == ["Paris", " is", " the", " capital", "."]
    assert [t.start for t in scored.tokens] == [0, 5, 8, 12, 20]
    assert [t.is_top for t in scored.tokens] == [True, True, False, True, True]
    assert (scored.next_text, scored.finished, scored.prompt_tokens) == (" It", False, 9)
    verdict = judge(scored, budget=64)
    assert (DRAFT[: verdict.accepted_chars], verdict.correction) == ("Paris is", " a")
    assert (verdict.accepted_tokens, verdict.rejected_tokens) == (2, 3)
    assert verdict.margin == pytest.approx(1.5)


async def test_an_accepted_draft_at_the_end_of_the_answer() -> None:
    agreed = json.loads(json.dumps(RECORDED_SCORE))
    agreed["prompt_logprobs"][7] = entry(279, " the", -0.2, 1)
    agreed["choices"][0].update(message={"role": "assistant", "content": ""}, finish_reason="stop")
    client = cloud(recorded([httpx.Response(200, json=agreed)], []))
    verdict = judge(await client.score(MESSAGES, DRAFT), budget=64)
    await client.aclose()
    assert (verdict.accepted_chars, verdict.correction, verdict.ended) == (len(DRAFT), "", True)


async def test_answers_that_break_the_schema_are_protocol_errors() -> None:
    broken = json.loads(json.dumps(RECORDED_SCORE))
    broken["prompt_logprobs"][8] = entry(6864, " capitol", -0.1, 1)  # does not spell the draft
    client = cloud(
        recorded([httpx.Response(200, json=broken), httpx.Response(200, json={"choices": []})], [])
    )
    with pytest.raises(CloudProtocolError):
        await client.score(MESSAGES, DRAFT)
    with pytest.raises(CloudProtocolError):
        await client.score(MESSAGES, DRAFT)
    await client.aclose()


async def test_the_cloud_continues_an_open_assistant_message() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": " a"}}]},
        {"choices": [{"index": 0, "delta": {"content": " capital"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2}},
    ]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    seen: list[dict[str, Any]] = []
    stream = httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    client = cloud(recorded([stream], seen))
    async with client.continue_from(MESSAGES, "Paris is", GenerationParams(8, 0.0)) as tokens:
        continued = "".join([text async for text in texts(tokens)])
    await client.aclose()
    assert continued == " a capital"
    assert tokens.usage.completion_tokens == 2
    assert seen[0]["messages"][-1] == {"role": "assistant", "content": "Paris is"}
    assert seen[0]["continue_final_message"] is True
    assert seen[0]["stream"] is True
