"""Numerics suite: does llama.cpp score a text the same in one batch as token by token?

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
