"""Conversation suite: the edge's first draft token at turn 1, 10 and 30 of one chat.

A chat resends its whole history every turn.  Measured on the in-process edge (the part
prompt reuse changes; the server's own overhead is the ``ttft`` suite's), the history
fitted to the edge's window exactly as the server fits it, four ways side by side:

- ``cold``: nothing of the conversation evaluated (no reuse at all);
- ``followup``: the previous turn was just answered (llama.cpp's live cache);
- ``other``: the previous turn was answered, then another conversation took the model
  (the kept prompt states bring this one back);
- ``prewarm``: cold, but the history was sent ahead while the question was typed.

At turn 30 the chat no longer fits the 2,048-token window: the oldest turns are dropped
(in blocks, see :mod:`speculate.core.trim`), as the server does.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import anyio

from speculate.backends import models
from speculate.backends.base import GenerationParams
from speculate.backends.llamacpp import LlamaCppEdge
from speculate.core.chat import Message
from speculate.core.trim import fit

TURNS = (1, 10, 30)
ANSWER_TOKENS = 64  # max_tokens of each request: the window keeps room for it
TOPICS = ("sleep", "cooking", "gardening", "running", "reading", "saving money")


def chat(turns: int, topic: str = "sleep") -> list[Message]:
    """``turns - 1`` answered turns, then the question of turn ``turns``."""
    messages: list[Message] = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(1, turns):
        messages.append({"role": "user", "content": f"Give me tip {i} about {topic}, briefly."})
        messages.append(
            {
                "role": "assistant",
                "content": f"Tip {i}: keep a steady routine for {topic}, start small, and "
                f"check your progress each week so the habit sticks. When a week goes "
                f"badly, do not give up: write down what got in the way of {topic} and "
                f"plan one change for the next week.",
            }
        )
    messages.append({"role": "user", "content": f"Give me tip {turns} about {topic}, briefly."})
    return messages


async def _first_token_ms(edge: LlamaCppEdge, messages: list[Message]) -> tuple[float, int]:
    fitted = fit(messages, edge.window(), ANSWER_TOKENS).messages
    started = time.perf_counter()
    async with edge.stream(fitted, GenerationParams(ANSWER_TOKENS, 0.0)) as tokens:
        await tokens.receive()
        elapsed = (time.perf_counter() - started) * 1000
    return elapsed, tokens.usage.cached_tokens


async def _answer(edge: LlamaCppEdge, messages: list[Message]) -> None:
    fitted = fit(messages, edge.window(), ANSWER_TOKENS).messages
    async with edge.stream(fitted, GenerationParams(8, 0.0)) as tokens:
        while True:
            try:
                await tokens.receive()
            except anyio.EndOfStream:
                break


async def _forget(edge: LlamaCppEdge, topic: str) -> None:
    """Leave nothing of any chat in the model: another prompt, nothing kept."""
    keep = edge.saved_prompts.capacity_bytes
    edge.saved_prompts.capacity_bytes = 0
    await _answer(edge, [{"role": "user", "content": f"One word about {topic}."}])
    edge.saved_prompts.capacity_bytes = keep


async def _measure(edge: LlamaCppEdge, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for turn in TURNS:
        samples: dict[str, list[tuple[float, int]]] = {}
        for rep in range(repeats):
            topic = TOPICS[rep % len(TOPICS)]
            messages, previous = chat(turn, topic), chat(max(1, turn - 1), topic)
            await _forget(edge, f"cold {rep}")
            samples.setdefault("cold", []).append(await _first_token_ms(edge, messages))
            await _forget(edge, f"follow {rep}")
            await _answer(edge, previous)
            samples.setdefault("followup", []).append(await _first_token_ms(edge, messages))
            await _forget(edge, f"other {rep}")
            await _answer(edge, previous)
            await _answer(edge, chat(turn, "another topic entirely"))
            samples.setdefault("other", []).append(await _first_token_ms(edge, messages))
            await _forget(edge, f"warm {rep}")
            partial = [*messages[:-1], {"role": "user", "content": "Give me tip"}]
            await edge.prewarm(fit(partial, edge.window(), ANSWER_TOKENS).messages)
            samples.setdefault("prewarm", []).append(await _first_token_ms(edge, messages))
        window = edge.window()
        fitted = fit(chat(turn), window, ANSWER_TOKENS)
        row: dict[str, Any] = {
            "turn": turn,
            # Counted: the fit may only have checked a bound, which is never below it.
            "prompt_tokens": window.count(fitted.messages),
            "dropped_turns": fitted.dropped_turns,
        }
        cold = statistics.median(ms for ms, _ in samples["cold"])
        for name, values in samples.items():
            median = statistics.median(ms for ms, _ in values)
            row[f"{name}_ms"] = round(median, 1)
            if name != "cold":
                row[f"{name}_x"] = round(median / cold, 3)
        row["prewarm_cached"] = statistics.median(c for _, c in samples["prewarm"])
        rows.append(row)
    return rows


def run(model: str = "smollm2-135m", repeats: int = 3) -> list[dict[str, Any]]:
    edge = LlamaCppEdge(models.resolve(model), model_name=model, n_ctx=2048)
    return anyio.run(_measure, edge, repeats)
