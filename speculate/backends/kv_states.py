"""Evaluated prompts of recent conversations, so a follow-up does not pay for its history.

One llama.cpp context serves every request. Its KV cache holds the last prompt
evaluated, and llama-cpp-python already reuses the part a new prompt shares with it (the
same conversation one turn later pays only for the new turn). What it cannot do is keep
two conversations: a request from another chat overwrites the cache. So before a prompt
that shares little with the cached one, the cached sequence is saved (llama.cpp's
per-sequence state: only the KV cells, no logits), and a later prompt that continues a
saved conversation gets it back instead of evaluating it again.

Saving costs a copy of the sequence's KV cells (about 23 KB per token for SmolLM2-135M),
and only happens when a different conversation is about to take over; the single-user
chat never pays it. The states are kept in least-recently-used order up to a byte budget.
Runs on the decoding thread, under the model's lock.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

__all__ = ["SavedPrompts", "common_prefix"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class SavedPrompts:
    def __init__(self, capacity_bytes: int, *, min_tokens: int = 16) -> None:
        self.capacity_bytes = capacity_bytes
        # Keeping is cheap (a copy of the KV cells: ~1 MB and well under a millisecond for
        # 50 tokens of SmolLM2) next to evaluating again (~0.3 s for those 50 on a slow
        # core); only a handful of tokens is not worth the bookkeeping.
        self.min_tokens = min_tokens
        self._states: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.size_bytes = 0
        self.saved = 0
        self.restored = 0

    def __len__(self) -> int:
        return len(self._states)

    def prepare(self, llama: Any, tokens: Sequence[int]) -> int:
        """Make the model's cache hold the longest known prefix of ``tokens`` (saving the
        cached conversation first if ``tokens`` would overwrite it); how many it holds."""
        if self.capacity_bytes <= 0:
            return common_prefix(self._live(llama), tokens)
        live_tokens = self._live(llama)
        live = common_prefix(live_tokens, tokens)
        if len(live_tokens) >= self.min_tokens and live < len(live_tokens) // 2:
            self._save(llama, tuple(live_tokens))
        best_key, best = None, live
        for key in self._states:
            shared = common_prefix(key, tokens)
            if shared > best:
                best_key, best = key, shared
        if best_key is None or best - live < self.min_tokens:
            return live
        self._restore(llama, best_key)
        return best

    @staticmethod
    def _live(llama: Any) -> list[int]:
        return [int(t) for t in llama.input_ids[: llama.n_tokens]]

    def _save(self, llama: Any, key: tuple[int, ...]) -> None:
        import llama_cpp

        if key in self._states:
            self._states.move_to_end(key)
            return
        ctx = llama._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        if size <= 0 or size > self.capacity_bytes:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        if written <= 0:
            return
        self._states[key] = (buffer, written)
        self.size_bytes += size
        self.saved += 1
        while self.size_bytes > self.capacity_bytes and self._states:
            _, (old, _) = self._states.popitem(last=False)
            self.size_bytes -= len(old)

    def _restore(self, llama: Any, key: tuple[int, ...]) -> None:
        import llama_cpp

        buffer, written = self._states[key]
        self._states.move_to_end(key)
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        if llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, buffer, written, 0) <= 0:
            llama.n_tokens = 0  # nothing usable is cached now: evaluate from scratch
            return
        llama.input_ids[: len(key)] = key
        llama.n_tokens = len(key)
        llama._requires_eval = True  # the logits are not the restored sequence's
        self.restored += 1
