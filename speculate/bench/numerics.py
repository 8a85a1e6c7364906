"""Numerics suite: does llama.cpp score a text the same in one batch as token by token,
and does a repeated greedy call to the stand-in give the first answer again?

Verify mode compares a batched prompt evaluation (the check) with one-token decoding (the
greedy answer). For a few prompts and their own greedy answers, the same tokens are
evaluated in one batch and one at a time; reported: the largest difference in the chosen
tokens' log-probabilities and how many positions change their top choice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from speculate.backends import models
from speculate.backends.chat_prompt import ChatPrompt

PROMPTS = [
    "Give me two tips for sleeping well.",
    "Name three colours.",
    "What is the capital of France?",
]


def _logprobs(rows: Any) -> Any:
    shifted = rows - rows.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def run(model: str = "smollm2-135m", tokens: int = 48) -> list[dict[str, Any]]:
    from llama_cpp import Llama

    llama: Any = Llama(
        model_path=str(models.resolve(model)),
        n_ctx=1024,
        n_threads=1,
        logits_all=True,
        verbose=False,
    )
    chat = ChatPrompt(llama)
    rows = []
    for prompt in PROMPTS:
        text = chat.render([{"role": "user", "content": prompt}])
        context = llama.tokenize(text.encode(), add_bos=False, special=True)
        answer: list[int] = []
        for token in llama.generate(context, temp=0.0, top_k=1, repeat_penalty=1.0):
            if token == llama.token_eos() or len(answer) >= tokens:
                break
            answer.append(token)
        sequence = context + answer
        llama.reset()
        llama.eval(sequence)
        batched = _logprobs(np.array(llama.scores[len(context) - 1 : len(sequence) - 1]))
        llama.reset()
        for token in sequence:
            llama.eval([token])
        single = _logprobs(np.array(llama.scores[len(context) - 1 : len(sequence) - 1]))
        chosen = np.arange(len(answer)), np.array(answer)
        rows.append(
            {
                "prompt": prompt,
                "tokens": len(answer),
                "max_logprob_diff": round(float(np.abs(batched[chosen] - single[chosen]).max()), 4),
                "top_choice_flips": int((batched.argmax(axis=1) != single.argmax(axis=1)).sum()),
            }
        )
    return rows


REPEAT_PROMPTS = [
    "Name three colours and say something about each.",
    "Name three colours of the rainbow and describe each.",
    "Give me two tips for sleeping well.",
    "Write a haiku about rain.",
    "How do plants make food?",
]


def repeats(model: str = "smollm2-135m", tokens: int = 64) -> list[dict[str, Any]]:
    """Ask the stand-in the same greedy question three times in a row, per setting: does
    a repeat (which finds the prompt in the KV cache) give the first answer again?"""
    import anyio
    import httpx

    from speculate.backends.standin import StandInServer

    async def one(n_batch: int, reuse_prefix: bool) -> dict[str, Any]:
        standin = StandInServer(
            models.resolve(model),
            alias="standin",
            n_threads=1,
            n_batch=n_batch,
            reuse_prefix=reuse_prefix,
        )
        await standin.start()
        same = repeats_equal = 0
        try:
            async with httpx.AsyncClient(timeout=120) as client:
                for prompt in REPEAT_PROMPTS:
                    texts = []
                    for _ in range(3):
                        response = await client.post(
                            f"{standin.base_url}/chat/completions",
                            json={
                                "model": "standin",
                                "max_tokens": tokens,
                                "temperature": 0,
                                "messages": [{"role": "user", "content": prompt}],
                            },
                        )
                        texts.append(response.json()["choices"][0]["message"]["content"])
                    same += texts[0] == texts[1] == texts[2]
                    repeats_equal += texts[1] == texts[2]
        finally:
            await standin.stop()
        return {
            "n_batch": n_batch,
            "reuse_prefix": reuse_prefix,
            "prompts": len(REPEAT_PROMPTS),
            "all_three_equal": same,
            "second_equals_third": repeats_equal,
        }

    async def main() -> list[dict[str, Any]]:
        return [await one(512, True), await one(1, True), await one(512, False)]

    return anyio.run(main)
