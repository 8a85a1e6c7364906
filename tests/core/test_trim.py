"""Fitting a conversation into a window: which turns go, which stay, when it refuses."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speculate.core.chat import Message
from speculate.core.trim import DROP_BLOCK_TURNS, Window, byte_bound, fit, turns
from speculate.errors import ContextTooLong


def words(messages: list[Message]) -> int:
    """A toy tokenizer: one token per word plus two per message (role markers)."""
    return sum(2 + len(m["content"].split()) for m in messages)


def chat(n_turns: int, words_per_message: int = 10, system: bool = True) -> list[Message]:
    messages: list[Message] = [{"role": "system", "content": "be brief"}] if system else []
    for i in range(n_turns):
        messages.append({"role": "user", "content": " ".join([f"q{i}"] * words_per_message)})
        messages.append({"role": "assistant", "content": " ".join([f"a{i}"] * words_per_message)})
    messages.append({"role": "user", "content": "last question"})
    return messages


def test_a_conversation_that_fits_is_sent_whole() -> None:
    messages = chat(3)
    fitted = fit(messages, Window(1000, words), max_tokens=100)
    assert fitted.messages == messages
    assert fitted.dropped_turns == 0
    assert fitted.prompt_tokens == words(messages)


def test_a_chat_the_bound_shows_to_fit_is_not_counted() -> None:
    counted: list[int] = []

    def counting(messages: list[Message]) -> int:
        counted.append(1)
        return words(messages)

    def characters(messages: list[Message]) -> int:  # >= words() for these chats
        return sum(2 + len(m["content"]) for m in messages)

    short = chat(2)
    window = Window(1000, counting, bound=characters)
    fitted = fit(short, window, max_tokens=100)
    assert (fitted.messages, fitted.dropped_turns, counted) == (short, 0, [])
    assert fitted.prompt_tokens == characters(short)
    # Past the bound it counts, and trims by the count, not the bound.
    long = chat(30)
    fitted = fit(long, window, max_tokens=100)
    assert counted
    assert words(fitted.messages) <= 900 < characters(fitted.messages)


def test_the_oldest_turns_go_and_the_system_message_and_last_turn_stay() -> None:
    messages = chat(30)  # 30 turns of 24 tokens + system 4 + last 4 = 728 tokens
    window = Window(600, words)
    fitted = fit(messages, window, max_tokens=100)
    assert words(fitted.messages) <= 500
    assert fitted.messages[0] == messages[0]
    assert fitted.messages[-1] == messages[-1]
    kept_turns = turns(fitted.messages)[1]
    assert len(kept_turns) == 30 + 1 - fitted.dropped_turns
    # The kept history is the newest, contiguous and in order.
    assert fitted.messages[1:] == messages[1 + 2 * fitted.dropped_turns :]


def test_turns_are_dropped_in_blocks_so_the_prompt_start_holds_across_follow_ups() -> None:
    window = Window(600, words)
    starts = []
    for n in range(30, 30 + DROP_BLOCK_TURNS * 2):
        fitted = fit(chat(n), window, max_tokens=100)
        assert fitted.dropped_turns % DROP_BLOCK_TURNS == 0
        assert words(fitted.messages) <= 500
        starts.append(fitted.messages[1]["content"])
    # Over 2 blocks of new turns the start of the prompt moved at most twice, not 8 times.
    moves = sum(1 for a, b in itertools.pairwise(starts) if a != b)
    assert moves <= 2


def test_blocks_never_leave_less_than_half_the_window_used() -> None:
    # Turns of 202 tokens: dropping a whole block of 4 would leave almost nothing.
    messages = chat(6, words_per_message=100)
    fitted = fit(messages, Window(1000, words), max_tokens=100)
    assert words(fitted.messages) <= 900
    assert words(fitted.messages) * 2 >= 900 or fitted.dropped_turns < DROP_BLOCK_TURNS


def test_a_last_turn_that_alone_does_not_fit_is_refused_naming_the_model() -> None:
    messages: list[Message] = [{"role": "user", "content": "word " * 700}]
    with pytest.raises(ContextTooLong) as caught:
        fit(messages, Window(600, words, "the edge model"), max_tokens=100)
    assert caught.value.http_status == 400
    assert caught.value.code == "context_too_long"
    assert caught.value.param == "messages"
    assert "the edge model" in caught.value.message
    assert "702 tokens" in caught.value.message


def test_max_tokens_counts_against_the_window() -> None:
    messages = chat(2)  # 56 tokens
    assert fit(messages, Window(200, words), max_tokens=100).dropped_turns == 0
    assert fit(messages, Window(200, words), max_tokens=170).dropped_turns > 0


def test_messages_before_the_first_user_message_form_a_turn() -> None:
    messages: list[Message] = [
        {"role": "system", "content": "s"},
        {"role": "assistant", "content": "hello, how can I help"},
        {"role": "user", "content": "hi"},
    ]
    system, units = turns(messages)
    assert system == messages[:1]
    assert units == [[messages[1]], [messages[2]]]


@given(
    st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=40),
    st.integers(min_value=50, max_value=800),
)
def test_whatever_the_sizes_the_result_fits_or_the_last_turn_is_too_long(
    sizes: list[int], window_tokens: int
) -> None:
    messages: list[Message] = [{"role": "system", "content": "sys"}]
    for i, size in enumerate(sizes):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": "w " * size})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": "end"})
    window = Window(window_tokens, words)
    try:
        fitted = fit(messages, window, max_tokens=20)
    except ContextTooLong:
        last = turns(messages)[1][-1]
        assert words([messages[0], *last]) > window_tokens - 20
        return
    assert words(fitted.messages) <= window_tokens - 20
    assert fitted.messages[0] == messages[0]
    assert fitted.messages[-1] == messages[-1]


def test_the_byte_bound_never_undercounts_a_real_tokenizer_on_text() -> None:
    messages: list[Message] = [
        {"role": "user", "content": "héllo wörld, ünïcode 日本語 and emoji 🎉"},
        {"role": "assistant", "content": "x" * 50},
    ]
    # One token per UTF-8 byte is the most any byte-level tokenizer can make.
    assert byte_bound(messages) >= sum(len(m["content"].encode()) for m in messages)
