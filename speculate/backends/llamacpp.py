"""The edge model: llama.cpp in-process, one model shared by all requests.

llama.cpp decodes on a worker thread so the event loop never blocks.  Requests take
turns shared fairly between clients (:class:`~speculate.backends.turns.FairTurns`; the
first wait is reported as ``edge_queue_ms``): a request gives way mid-answer when a
client that has had less of the model waits, and continues from its own text on its next
turn, so one client's backlog never holds another's request.  A stop flag is
checked after every token, so leaving the stream stops generation within one token, and
a turn ends only once the thread has let go of the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from speculate.backends.base import GenerationParams, TokenChannel, Usage
from speculate.backends.chat_prompt import ChatPrompt
from speculate.backends.kv_states import SavedPrompts
from speculate.backends.turns import FairTurns
from speculate.core.chat import Message
from speculate.core.trim import Window
from speculate.errors import EdgeError, ModelCorrupt, SpeculateError, unwrapped

log = logging.getLogger("speculate.backends.llamacpp")

# How long the event loop waits for a first turn's thread to reach the tokenizer (it
# takes a few tenths of a millisecond; the bound is for a thread the OS is slow to run).
FIRST_TURN_HANDOVER_S = 0.002
# How long the decoding thread waits for the loop to send an answer's first token.
FIRST_TOKEN_HANDBACK_S = 0.002


def warn_of_amx(system_info: str) -> bool:
    """Warn (and say so) when llama.cpp was built with its AMX kernels: on some Intel Xeon
    machines of the Sapphire Rapids generation and later, and the virtual machines on
    them, their first tile instruction kills the process at the first answer."""
    if "AMX_INT8 = 1" not in system_info:
        return False
    log.warning(
        "this llama-cpp-python was built with llama.cpp's AMX kernels, which crash on some "
        "Intel Xeon machines (a segmentation fault at the first answer); scripts/setup "
        "builds it without them (README: When things go wrong)"
    )
    return True


def handoff(tokens: TokenChannel) -> Callable[[str], None]:
    """How the decoding thread hands a token to the event loop: ``call_soon_threadsafe``
    queues the token and returns, so decoding never stalls on a busy loop.

    Except once: after the answer's first token the thread waits (at most
    :data:`FIRST_TOKEN_HANDBACK_S`) until the loop has done that token's work and what it
    set going at once (the response's writer sending it).  The thread's own Python
    between tokens would otherwise hold the interpreter while the loop waits for it, and
    the first token, which the user waits for, would leave later than the rest."""
    loop = asyncio.get_running_loop()
    first_out = threading.Event()

    def put_first(text: str) -> None:
        tokens.put(text)  # its follower has it in this callback
        loop.call_soon(first_out.set)  # after what the follower scheduled just now

    def queue(text: str) -> None:
        if first_out.is_set():
            loop.call_soon_threadsafe(tokens.put, text)
            return
        loop.call_soon_threadsafe(put_first, text)
        first_out.wait(FIRST_TOKEN_HANDBACK_S)
        first_out.set()  # (waited long enough: the rest go without waiting)

    return queue


def _entropy_recorder(entropies: list[float], limit: int) -> Callable[[Any, Any], Any]:
    """A llama.cpp logits processor that leaves the logits alone and records the
    entropy of the next-token distribution (called once per token, before sampling)."""
    import numpy as np

    def record(input_ids: Any, logits: Any) -> Any:
        if len(entropies) >= limit:  # judged already: no more work per token
            return logits
        shifted = logits - logits.max()
        weights = np.exp(shifted)
        total = weights.sum()
        entropies.append(float(np.log(total) - (weights * shifted).sum() / total))
        return logits

    return record


def json_grammar(response_format: dict[str, Any] | None) -> Any:
    """A llama.cpp grammar for OpenAI's ``response_format``: any JSON object for
    ``json_object``, the schema's shape for ``json_schema``; None for plain text."""
    if not response_format or response_format.get("type") not in ("json_object", "json_schema"):
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    schema = (response_format.get("json_schema") or {}).get("schema")
    try:
        if response_format["type"] == "json_schema" and schema:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise EdgeError(f"the edge model cannot follow this JSON schema: {exc}") from exc


def default_threads() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(eq=False)
class _Answer:
    """One request's answer as the decoding thread works on it, turn by turn."""

    messages: list[Message]
    params: GenerationParams
    prefix: str | None
    usage: Usage
    deliver: Callable[[str], None]
    stop: threading.Event = field(default_factory=threading.Event)
    generated: list[str] = field(default_factory=list)
    # Set on the decoding thread as its prompt goes into the tokenizer (see _first_turn_now).
    tokenizing: threading.Event = field(default_factory=threading.Event)

    def keep(self, text: str) -> None:  # on the decoding thread
        self.generated.append(text)
        self.deliver(text)


async def _finished(turn: asyncio.Future[bool]) -> bool:
    """The turn's outcome, once its thread is done with the model.  Not abandonable: a
    cancelled request waits (one token at most, its stop flag is set by then) until the
    thread has stopped touching the model, then is cancelled."""
    with anyio.CancelScope(shield=True):
        paused = await asyncio.shield(turn)
    return paused


class LlamaCppEdge:
    """An :class:`~speculate.backends.base.EdgeBackend` over llama-cpp-python."""

    def __init__(
        self,
        model_path: Path,
        *,
        model_name: str,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int | None = None,
        n_gpu_layers: int = 0,
        flash_attn: bool = False,
        n_batch: int = 512,
        chat_format: str | None = None,
        prompt_cache_bytes: int = 256 << 20,
    ) -> None:
        from llama_cpp import Llama, llama_print_system_info  # (slow to load: here)

        warn_of_amx(llama_print_system_info().decode(errors="replace"))
        threads = n_threads or default_threads()
        try:
            self._llama: Any = Llama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_threads=threads,
                # llama.cpp's batch (prompt) threads default to every core and spin while
                # they wait; next to a cloud stand-in on a small device that starves both.
                n_threads_batch=threads,
                n_gpu_layers=n_gpu_layers,
                flash_attn=flash_attn,
                n_batch=n_batch,
                chat_format=chat_format,
                seed=seed if seed is not None else 0xFFFFFFFF,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelCorrupt(f"llama.cpp could not load {model_path}: {exc}") from exc
        self.model_name = model_name
        self.model_sha256: str | None = None  # set by whoever knows it (models.file_sha256)
        self.n_ctx = n_ctx
        self._chat_prompt = ChatPrompt(self._llama)
        self.saved_prompts = SavedPrompts(prompt_cache_bytes)
        self._turns = FairTurns()
        # One thread decodes: turns make the model one request's at a time anyway, and a
        # turn handed to it from the event loop starts without waiting for a task.
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-decode")

    @property
    def waiting(self) -> int:
        """Requests queued for the model right now."""
        return self._turns.waiting

    def window(self) -> Window:
        """The edge's context window, counted with its own tokenizer and chat template."""
        return self._chat_prompt.window(self.n_ctx, "the edge model")

    def _prompt_tokens(self, prompt: str) -> list[int]:
        return list(self._llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))

    async def prewarm(self, messages: list[Message]) -> bool:
        """Evaluate this conversation's prompt now (the user is still typing the next
        turn), so the request that follows pays only for what is new.  Done only while
        no request waits, and it gives way between batches as soon as one arrives;
        False if the model was busy."""
        if self._turns.busy():
            return False
        await self._turns.acquire("prewarm")
        try:
            prompt = self._chat_prompt.render(messages)
            return await anyio.to_thread.run_sync(self._evaluate, prompt)
        finally:
            self._turns.release()

    def _evaluate(self, prompt: str) -> bool:
        llama = self._llama
        tokens = self._prompt_tokens(prompt)[: self.n_ctx - 1]
        held = min(self.saved_prompts.prepare(llama, tokens), len(tokens) - 1)
        llama.n_tokens = held  # eval() drops the cache past this point
        batch = max(1, int(llama.n_batch))
        for start in range(held, len(tokens), batch):
            if self.waiting:  # a request arrived: it comes first
                return False
            llama.eval(tokens[start : start + batch])
        return True

    @asynccontextmanager
    async def stream(
        self, messages: list[Message], params: GenerationParams, prefix: str | None = None
    ) -> AsyncIterator[TokenChannel]:
        tokens = TokenChannel()
        answer = _Answer(messages, params, prefix, tokens.usage, handoff(tokens))
        self._turns.enter(params.client)
        first_turn = self._first_turn_now(answer)
        # The task group wraps what the caller raised inside the stream (the stream's
        # own error among it): the caller gets its exception back.
        with unwrapped():
            async with anyio.create_task_group() as group:
                group.start_soon(self._run, answer, tokens, first_turn, name="edge decoding")
                try:
                    yield tokens
                finally:
                    answer.stop.set()  # the worker sees it after the current token

    def _first_turn_now(self, answer: _Answer) -> asyncio.Future[bool] | None:
        """If the model is free, its decoding thread starts on the answer here, in the
        caller's own task: a request's first token then waits for no task switch (the
        response's headers and its ``start`` event are written while the prompt is
        evaluated, not before).  None when the answer must wait its turn."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: the turn is taken in _run
            return None
        if not self._turns.try_acquire(answer.params.client):
            return None
        answer.usage.queue_ms = 0.0
        turn = loop.run_in_executor(self._decoder, self._turn, answer)
        # The loop lets the thread have the interpreter until its prompt is in the
        # tokenizer, which runs without it: the response's set-up that follows here then
        # overlaps the tokenizing.  Left to itself, the thread got the interpreter only
        # once that set-up was done (measured: the server's 0.2 ms switch interval did not
        # hand it over sooner, nor did 0.05 ms), and the request's Python and the
        # tokenizer ran one after the other.
        answer.tokenizing.wait(FIRST_TURN_HANDOVER_S)
        return turn

    async def _run(
        self,
        answer: _Answer,
        tokens: TokenChannel,
        first_turn: asyncio.Future[bool] | None,
    ) -> None:
        """Generate in turns: each turn ends when the answer does, or when another
        client has waited while this one held the model for a slice; the next turn
        continues the answer from the text generated so far."""
        client, queued_at = answer.params.client, time.perf_counter()
        error: SpeculateError | None = None
        try:
            while first_turn is not None or not answer.stop.is_set():
                turn, first_turn = first_turn, None
                if turn is None:
                    await self._turns.acquire(client)
                    if not answer.generated:
                        waited = time.perf_counter() - queued_at
                        answer.usage.queue_ms = round(waited * 1000, 3)
                try:
                    paused = await (self._decode(answer) if turn is None else _finished(turn))
                finally:
                    self._turns.release()
                if not paused:
                    return
        except SpeculateError as exc:
            error = exc
        except Exception as exc:  # llama.cpp raises plain errors; map them once, here
            error = EdgeError(f"edge generation failed: {exc}")
        finally:
            self._turns.leave(client)
            # The thread's last token was queued before its turn's end was: it is in.
            tokens.end(error)

    async def _decode(self, answer: _Answer) -> bool:
        """One turn on the decoding thread, waited for to its end."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Not abandonable: a cancelled request waits (one token at most) until the
            # thread has stopped touching the model.
            return await anyio.to_thread.run_sync(self._turn, answer)
        return await _finished(loop.run_in_executor(self._decoder, self._turn, answer))

    def _turn(self, answer: _Answer) -> bool:
        """One turn of ``answer`` (on the decoding thread), continuing from what it has
        generated so far; True if it gave way to another client before the end."""
        so_far = "".join(answer.generated)
        left = replace(answer.params, max_tokens=answer.params.max_tokens - len(answer.generated))
        prefix = answer.prefix
        start = prefix + so_far if prefix is not None else so_far or None
        try:
            return self._generate(
                answer.messages,
                left,
                answer.stop,
                answer.usage,
                answer.keep,
                start,
                answer.tokenizing,
            )
        finally:
            answer.tokenizing.set()  # (a turn that failed before it: the loop waits no more)

    def _generate(
        self,
        messages: list[Message],
        params: GenerationParams,
        stop: threading.Event,
        usage: Usage,
        deliver: Callable[[str], None],
        prefix: str | None,
        tokenizing: threading.Event,
    ) -> bool:
        """One turn on the model (on the decoding thread); True if it gave way to another
        client before the answer was done.  ``tokenizing`` is set as the prompt goes into
        the tokenizer."""
        # The chat's prompt as the chat endpoint would build it (then the answer so far,
        # to continue it), tokenized once here and handed to llama.cpp as tokens: the
        # tokenizer is a real share of a short prompt's time to first token.  Into the
        # tokenizer first: the first turn's event loop waits for that (_first_turn_now).
        prompt, chat_stops = self._chat_prompt.render_with_stops(messages)
        if prefix is not None:
            prompt += prefix
        tokenizing.set()
        tokens = self._prompt_tokens(prompt)
        kwargs: dict[str, Any] = {
            "stream": True,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "stop": [*chat_stops, *params.stop],
            **params.sampler_settings(),
        }
        grammar = json_grammar(params.response_format)
        if grammar is not None:
            kwargs["grammar"] = grammar
        if params.confidence_tokens:
            entropies = usage.extra.setdefault("entropy", [])
            kwargs["logits_processor"] = [_entropy_recorder(entropies, params.confidence_tokens)]
        # Another conversation's evaluated prompt is kept before this one overwrites it,
        # and this one's is brought back if it was kept; llama-cpp-python then evaluates
        # only what its cache does not hold.
        held = min(self.saved_prompts.prepare(self._llama, tokens), len(tokens) - 1)
        first_turn = usage.prompt_tokens == 0
        if first_turn:
            usage.prompt_tokens, usage.cached_tokens = len(tokens), held
        # llama-cpp-python types its stream as a union with the non-stream response.
        chunks: Any = self._llama.create_completion(prompt=tokens, **kwargs)
        try:
            for chunk in chunks:
                if stop.is_set():
                    usage.finish_reason = "cancelled"
                    break
                choice = chunk["choices"][0]
                text = choice["text"]
                if text:
                    usage.completion_tokens += 1
                    deliver(str(text))
                if choice.get("finish_reason"):
                    usage.finish_reason = choice["finish_reason"]
                    break
                if self._turns.should_yield(params.client):
                    return True  # a client charged less waits: give way, continue later
        finally:
            chunks.close()
        return False
