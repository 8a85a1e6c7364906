"""Fitting a conversation into a model's context window by dropping its oldest turns.

A model holds ``n_ctx`` tokens: the prompt plus the answer's ``max_tokens``.  When the
conversation does not fit, the oldest turns go (a turn: a user message and the replies
after it); the leading system messages and the last turn always stay.  If those alone do
not fit, nothing can be answered: :class:`~speculate.errors.ContextTooLong` (400).

Dropping exactly as much as needed would move the start of the prompt on every new turn
once a chat is at the window's edge, and a moved start defeats every prefix cache (the
edge's saved state, vLLM's automatic prefix caching): each follow-up would pay for the
whole window again.  So turns are dropped in blocks: the count is rounded up to a multiple
of :data:`DROP_BLOCK_TURNS`, which keeps the start where it was for several turns, unless
that would leave less than half the window used (then exactly what is needed).

Pure: tokens are counted by the function the caller passes (each model its own tokenizer).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from speculate.core.chat import Message
from speculate.errors import ContextTooLong

__all__ = [
    "DROP_BLOCK_TURNS",
    "ConversationFit",
    "Fitted",
    "Window",
    "byte_bound",
    "fit",
    "turns",
]

DROP_BLOCK_TURNS = 4


@dataclass(frozen=True, slots=True)
class Window:
    """A model's context: how many tokens it holds and how it counts a prompt."""

    tokens: int
    count: Callable[[list[Message]], int]
    name: str = "model"  # for messages: "the edge model", "the cloud model"
    # Optional: a cheap number never below ``count`` (the rendered prompt's bytes, say).
    # A chat it shows to fit is not counted: tokenizing costs a short prompt's first
    # token a millisecond or more.
    bound: Callable[[list[Message]], int] | None = None


@dataclass(frozen=True, slots=True)
class Fitted:
    messages: list[Message]
    dropped_turns: int
    prompt_tokens: int  # as counted, or the window's bound when that showed it fits


@dataclass(frozen=True, slots=True)
class ConversationFit:
    """What each side of one request is sent, once fitted to its window."""

    edge: list[Message]
    cloud: list[Message]
    dropped_turns: dict[str, int]
    note: str = ""  # why the route had to change, if it did


def byte_bound(messages: list[Message]) -> int:
    """At least as many as any byte-level tokenizer makes of this chat: no token of a
    byte-level BPE or of SentencePiece with byte fallback is shorter than one byte; 16
    per message covers the template's role markers, 64 a default system line; tool
    calls count as their JSON.  For a cloud whose tokenizer is not on the device: it
    may drop more history than needed, never too little."""
    return 64 + sum(16 + _bytes(m) for m in messages)


def _bytes(message: Message) -> int:
    size = len(str(message.get("content") or "").encode("utf-8"))
    if message.get("tool_calls"):
        size += len(json.dumps(message["tool_calls"], ensure_ascii=False).encode("utf-8"))
    return size


def turns(messages: list[Message]) -> tuple[list[Message], list[list[Message]]]:
    """The leading system messages, and the rest cut into turns that each begin at a
    user message (anything before the first user message is a turn of its own)."""
    start = 0
    while start < len(messages) and messages[start].get("role") in ("system", "developer"):
        start += 1
    units: list[list[Message]] = []
    for message in messages[start:]:
        if message.get("role") == "user" or not units:
            units.append([message])
        else:
            units[-1].append(message)
    return messages[:start], units


def fit(messages: list[Message], window: Window, max_tokens: int) -> Fitted:
    """``messages`` with as few of the oldest turns dropped as make the prompt fit in
    ``window.tokens - max_tokens`` (rounded to whole blocks of turns, see above)."""
    budget = window.tokens - max_tokens
    if window.bound is not None and (at_most := window.bound(messages)) <= budget:
        return Fitted(messages, 0, at_most)
    total = window.count(messages)
    if total <= budget:
        return Fitted(messages, 0, total)
    system, units = turns(messages)
    last = units[-1] if units else []
    droppable = units[:-1]

    def kept(dropped: int) -> list[Message]:
        return [*system, *(m for unit in droppable[dropped:] for m in unit), *last]

    alone = window.count(kept(len(droppable)))
    if alone > budget:
        room = max(budget, 0)
        raise ContextTooLong(
            f"the last message needs {alone} tokens with the system prompt, but "
            f"{window.name}'s window of {window.tokens} tokens leaves {room} after "
            f"max_tokens {max_tokens}; shorten it or lower max_tokens",
            param="messages",
        )
    low, high = 1, len(droppable)  # the fewest turns whose dropping makes it fit
    while low < high:
        middle = (low + high) // 2
        if window.count(kept(middle)) <= budget:
            high = middle
        else:
            low = middle + 1
    blocked = min(-(-low // DROP_BLOCK_TURNS) * DROP_BLOCK_TURNS, len(droppable))
    if blocked != low:
        tokens = window.count(kept(blocked))
        if tokens * 2 >= budget:
            return Fitted(kept(blocked), blocked, tokens)
    return Fitted(kept(low), low, window.count(kept(low)))
