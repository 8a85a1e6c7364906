"""The edge backend against the real embedded model."""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from speculate.backends import llamacpp, models
from speculate.backends.base import GenerationParams, TokenChannel, texts
from speculate.backends.llamacpp import LlamaCppEdge
from speculate.errors import EdgeError

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Count from one to twenty in words."}]


@pytest.fixture(scope="module")
def edge() -> Iterator[LlamaCppEdge]:
    return LlamaCppEdge(models.resolve("smollm2-135m"), model_name="smollm2-135m", n_threads=1)


def test_the_llama_cpp_build_runs_no_amx_kernels() -> None:
    # scripts/setup builds llama.cpp without them: on some Sapphire Rapids machines (and
    # the virtual machines on them) the first AMX tile instruction kills the process.
    # (On a CPU without AMX the build cannot have them: this guards the ones with it.)
    import llama_cpp

    from speculate.backends.llamacpp import warn_of_amx

    features = llama_cpp.llama_print_system_info().decode()
    assert "AVX" in features or "NEON" in features  # (the report is what it should be)
    assert not warn_of_amx(features)


def test_a_build_with_amx_kernels_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    from speculate.backends.llamacpp import warn_of_amx

    with caplog.at_level("WARNING", logger="speculate.backends.llamacpp"):
        assert not warn_of_amx("CPU : AVX2 = 1 | AVX512 = 1 | LLAMAFILE = 1 |")
        assert not caplog.records
        assert warn_of_amx("CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |")
    (record,) = caplog.records
    assert "AMX" in record.getMessage()
    assert "scripts/setup" in record.getMessage()


async def test_streams_tokens_and_reports_usage(edge: LlamaCppEdge) -> None:
    params = GenerationParams(max_tokens=16, temperature=0.0)
    pieces = []
    with anyio.fail_after(60):
        async with edge.stream(MESSAGES, params) as tokens:
            while True:
                try:
                    pieces.append(await tokens.receive())
                except anyio.EndOfStream:
                    break
    assert len(pieces) > 4
    assert tokens.usage.completion_tokens == len(pieces)
    assert tokens.usage.prompt_tokens > 5
    assert tokens.usage.finish_reason in ("length", "stop")


async def test_leaving_the_stream_stops_generation_within_a_token(edge: LlamaCppEdge) -> None:
    params = GenerationParams(max_tokens=400, temperature=0.0)
    with anyio.fail_after(60):
        async with edge.stream(MESSAGES, params) as tokens:
            for _ in range(3):
                await tokens.receive()
        # The context has exited: the worker thread has let go of the model.
    assert tokens.usage.finish_reason == "cancelled"
    assert tokens.usage.completion_tokens <= 3 + 1


async def test_a_free_model_starts_decoding_before_the_caller_lets_any_task_run(
    edge: LlamaCppEdge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first turn goes to the decoding thread from the caller's own task: the caller
    # blocks the event loop below, so a turn that waited for a task would never start.
    started = threading.Event()
    generate = edge._generate

    def noting(*args: Any) -> bool:
        started.set()
        return generate(*args)

    monkeypatch.setattr(edge, "_generate", noting)
    params = GenerationParams(max_tokens=4, temperature=0.0)
    with anyio.fail_after(60):
        async with edge.stream(MESSAGES, params) as tokens:
            assert started.wait(timeout=30)
            assert await tokens.receive()
    assert tokens.usage.queue_ms == 0.0


async def test_a_first_turn_has_its_prompt_in_the_tokenizer_when_the_stream_opens(
    edge: LlamaCppEdge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop hands the interpreter to the decoding thread until the tokenizer has the
    # prompt, so the caller's own work (a response's set-up) overlaps the tokenizing.
    # Left to itself the thread would wait for the loop's next await: the caller below
    # makes none before it looks.
    tokenizing = threading.Event()
    prompt_tokens = edge._prompt_tokens

    def noting(prompt: str) -> list[int]:
        tokenizing.set()
        return prompt_tokens(prompt)

    # (The loop's wait is bounded for a thread the OS is slow to run: not bounded here.)
    monkeypatch.setattr(llamacpp, "FIRST_TURN_HANDOVER_S", 30.0)
    params = GenerationParams(max_tokens=4, temperature=0.0)
    with anyio.fail_after(60):
        async with edge.stream(MESSAGES, params) as tokens:  # the thread is up and waiting
            assert await tokens.receive()
        monkeypatch.setattr(edge, "_prompt_tokens", noting)
        async with edge.stream(MESSAGES, params) as tokens:
            assert tokenizing.is_set()
            assert await tokens.receive()


async def test_a_turn_that_fails_before_the_tokenizer_does_not_hold_the_loop(
    edge: LlamaCppEdge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llamacpp, "FIRST_TURN_HANDOVER_S", 30.0)  # only the thread ends it

    def unrenderable(messages: list[dict[str, str]]) -> tuple[str, list[str]]:
        raise EdgeError("no prompt for this chat")

    monkeypatch.setattr(edge._chat_prompt, "render_with_stops", unrenderable)
    params = GenerationParams(max_tokens=4, temperature=0.0)
    started = time.perf_counter()
    with anyio.fail_after(60), pytest.raises(EdgeError, match="no prompt"):
        async with edge.stream(MESSAGES, params) as tokens:
            await tokens.receive()
    assert time.perf_counter() - started < 10


async def test_the_decoding_thread_waits_for_the_first_token_to_go_out_and_only_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # After the first token the thread lets the loop do that token's work and what the
    # work set going at once (the response's writer); later tokens never wait, even for
    # a loop that is busy.
    monkeypatch.setattr(llamacpp, "FIRST_TOKEN_HANDBACK_S", 30.0)  # only the loop ends it
    loop = asyncio.get_running_loop()
    channel = TokenChannel()
    seen: list[str] = []

    def listener(piece: str) -> bool:
        seen.append(piece)
        loop.call_soon(seen.append, f"{piece} sent")
        return False

    queue = llamacpp.handoff(channel)
    loop_blocked, second_queued = threading.Event(), threading.Event()
    blocked_for: list[float] = []

    def block() -> None:  # on the loop: nothing else runs until "b" is queued
        loop_blocked.set()
        started = time.perf_counter()
        second_queued.wait(10)
        blocked_for.append(time.perf_counter() - started)

    def decoding() -> list[str]:
        queue("a")
        back = list(seen)
        loop.call_soon_threadsafe(block)
        assert loop_blocked.wait(10)
        queue("b")
        second_queued.set()
        loop.call_soon_threadsafe(channel.end)
        return back

    with anyio.fail_after(30):
        following = asyncio.ensure_future(channel.follow(listener))
        first_back = await anyio.to_thread.run_sync(decoding)
        assert await following
    assert first_back == ["a", "a sent"]
    assert blocked_for[0] < 5  # "b" was queued while the loop was blocked
    assert seen == ["a", "a sent", "b", "b sent"]


async def test_the_event_loop_stays_responsive_while_decoding(edge: LlamaCppEdge) -> None:
    params = GenerationParams(max_tokens=48, temperature=0.0)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await anyio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(ticker)
            async with edge.stream(MESSAGES, params) as tokens:
                while True:
                    try:
                        await tokens.receive()
                    except anyio.EndOfStream:
                        break
            group.cancel_scope.cancel()
    assert len(gaps) > 10
    assert max(gaps) < 0.25  # a blocked loop would show the whole decode as one gap


async def test_one_clients_requests_are_served_in_their_order(edge: LlamaCppEdge) -> None:
    params = GenerationParams(max_tokens=8, temperature=0.0, client="a")
    order: list[int] = []
    waits: dict[int, float] = {}

    async def one(i: int, ready: anyio.Event) -> None:
        ready.set()
        async with edge.stream(MESSAGES, params) as tokens:
            await tokens.receive()
            order.append(i)
            async for _ in texts(tokens):
                pass
        waits[i] = tokens.usage.queue_ms

    with anyio.fail_after(120):
        async with anyio.create_task_group() as group:
            for i in range(4):
                ready = anyio.Event()
                group.start_soon(one, i, ready)
                await ready.wait()
    assert order == [0, 1, 2, 3]  # first come, first served within one client
    assert waits[0] < waits[3]
    assert waits[3] > 0


async def test_another_clients_request_does_not_wait_for_a_long_answer(
    edge: LlamaCppEdge,
) -> None:
    """A long answer for client a is running; client b asks. b's first token comes while
    a's answer is still going (a gives way after a slice), and a's answer still comes
    whole: as long as it would have been alone."""
    long_params = GenerationParams(max_tokens=160, temperature=0.0, client="a")
    short_params = GenerationParams(max_tokens=4, temperature=0.0, client="b")
    story = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    timeline: list[str] = []
    a_started = anyio.Event()

    async def long_answer() -> tuple[int, str | None]:
        count = 0
        async with edge.stream(story, long_params) as tokens:
            async for _ in texts(tokens):
                count += 1
                if count == 1:
                    a_started.set()
        timeline.append("a done")
        return count, tokens.usage.finish_reason

    async def short_answer() -> None:
        await a_started.wait()
        async with edge.stream(MESSAGES, short_params) as tokens:
            await tokens.receive()
            timeline.append("b first token")
            async for _ in texts(tokens):
                pass

    results: list[tuple[int, str | None]] = []

    async def run_long() -> None:
        results.append(await long_answer())

    with anyio.fail_after(180):
        async with anyio.create_task_group() as group:
            group.start_soon(run_long)
            group.start_soon(short_answer)
    assert timeline == ["b first token", "a done"]
    # a's answer went on after giving way, to its token limit: nothing was cut.
    count, finish = results[0]
    assert finish == "length"
    assert count >= 150  # (a few tokens may be text-less pieces of one character)


async def collect(edge: LlamaCppEdge, content: str, judged: int) -> tuple[str, list[float]]:
    params = GenerationParams(max_tokens=16, temperature=0.0, confidence_tokens=judged)
    with anyio.fail_after(60):
        async with edge.stream([{"role": "user", "content": content}], params) as tokens:
            text = "".join([piece async for piece in texts(tokens)])
    return text, tokens.usage.extra.get("entropy", [])


async def test_confidence_reports_an_entropy_per_token_and_changes_nothing(
    edge: LlamaCppEdge,
) -> None:
    plain, none = await collect(edge, "Count from one to twenty in words.", 0)
    text, entropy = await collect(edge, "Count from one to twenty in words.", 8)
    assert none == []
    assert text == plain  # the processor only reads the logits
    assert len(entropy) == 8  # the first 8 tokens, then no more work per token
    vocabulary = edge._llama.n_vocab()
    assert all(0.0 <= h <= math.log(vocabulary) + 1e-6 for h in entropy)
    # Counting is easy for the model; an open question is not: the first tokens say so.
    _, open_question = await collect(edge, "Invent a word and define it.", 8)
    assert statistics.fmean(entropy[:8]) < statistics.fmean(open_question[:8])


async def test_a_generation_failure_leaves_the_stream_as_itself(edge: LlamaCppEdge) -> None:
    """Not wrapped in the stream's task group: callers catch the error they expect."""
    too_long = [{"role": "user", "content": "word " * 6000}]  # the window holds 2,048
    with anyio.fail_after(60), pytest.raises(EdgeError, match="context window"):
        async with edge.stream(too_long, GenerationParams(8, 0.0)) as tokens:
            await tokens.receive()


async def test_what_the_caller_raises_inside_the_stream_comes_back_unwrapped(
    edge: LlamaCppEdge,
) -> None:
    messages = [{"role": "user", "content": "Say hi."}]
    with anyio.fail_after(60), pytest.raises(KeyError, match="the caller's own"):  # noqa: PT012 - the raise inside the stream is the act
        async with edge.stream(messages, GenerationParams(8, 0.0)) as tokens:
            await tokens.receive()
            raise KeyError("the caller's own")


async def test_the_configured_options_reach_llama_cpp() -> None:
    edge = LlamaCppEdge(
        models.resolve("smollm2-135m"),
        model_name="s",
        n_ctx=1024,
        n_threads=1,
        n_batch=64,
        chat_format="chatml",
        n_gpu_layers=0,
        flash_attn=False,
        prompt_cache_bytes=1 << 20,
    )
    llama = edge._llama
    assert llama.n_batch == 64
    assert llama.n_ctx() == 1024
    assert llama.chat_format == "chatml"
    assert edge.saved_prompts.capacity_bytes == 1 << 20
    window = edge.window()
    assert window.tokens == 1024


@pytest.mark.parametrize(
    "content",
    ["Hi", "Héllo, 日本語 and emoji 🎉🎉🎉?", "<|im_start|>assistant\n", "x" * 300 + " ü" * 50],
)
def test_the_window_bound_is_never_below_the_count(edge: LlamaCppEdge, content: str) -> None:
    window = edge.window()
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    assert window.bound is not None
    assert window.bound(chat) >= window.count(chat)
    assert window.bound(chat[1:]) >= window.count(chat[1:])


async def test_the_prompt_counted_is_the_prompt_evaluated(edge: LlamaCppEdge) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Héllo, 日本語 and emoji 🎉?"},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "Again."},
    ]
    params = GenerationParams(max_tokens=3, temperature=0.0)
    with anyio.fail_after(60):
        async with edge.stream(chat, params) as tokens:
            async for _ in texts(tokens):
                pass
    counted = edge.window().count(chat)
    assert tokens.usage.prompt_tokens == counted
    # What llama.cpp evaluated begins with exactly the tokens counted, then the answer.
    evaluated = [int(t) for t in edge._llama.input_ids[: edge._llama.n_tokens]]
    assert evaluated[:counted] == edge._prompt_tokens(edge._chat_prompt.render(chat))
    assert len(evaluated) > counted
