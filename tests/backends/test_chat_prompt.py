"""A chat rendered as its prompt, by the model's own template (vocabulary only)."""

from __future__ import annotations

from typing import Any

import pytest

from speculate.backends import chat_prompt, models
from speculate.backends.chat_prompt import ChatPrompt

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Why is the sky blue?"},
]


@pytest.fixture(scope="module")
def prompt() -> ChatPrompt:
    return ChatPrompt.of_model(models.resolve("smollm2-135m"))


@pytest.fixture
def renders(prompt: ChatPrompt, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every chat the template is run on."""
    seen: list[Any] = []
    render = prompt._render

    def counting(messages: list[dict[str, Any]]) -> tuple[str, list[str]]:
        seen.append(messages)
        return render(messages)

    monkeypatch.setattr(prompt, "_render", counting)
    prompt._last = None
    return seen


def test_a_chat_rendered_again_at_once_is_not_run_through_the_template_twice(
    prompt: ChatPrompt, renders: list[Any]
) -> None:
    first = prompt.render_with_stops(CHAT)
    again = prompt.render_with_stops([dict(m) for m in CHAT])  # equal, not the same objects
    assert again == first
    assert len(renders) == 1
    assert first[0].endswith("<|im_start|>assistant\n")
    assert "Why is the sky blue?" in first[0]


def test_any_change_to_the_chat_renders_it_anew(prompt: ChatPrompt, renders: list[Any]) -> None:
    template = ChatPrompt._render.__get__(prompt)  # (not counted)
    before = prompt.render(CHAT)
    edited = [CHAT[0], {"role": "user", "content": "Why is the sea blue?"}]
    longer = [*CHAT, {"role": "assistant", "content": "Light."}, {"role": "user", "content": "?"}]
    named = [CHAT[0], {**CHAT[1], "name": "ann"}]
    for chat in (edited, longer, named):
        assert prompt.render(chat) == template(chat)[0]
    assert prompt.render(CHAT) == before
    assert renders == [CHAT, edited, longer, named, CHAT]  # (the memo holds the last one)


def test_a_chat_with_fields_that_are_not_text_is_rendered_each_time(
    prompt: ChatPrompt, renders: list[Any]
) -> None:
    chat = [*CHAT, {"role": "assistant", "content": "Light.", "extra": {"a": 1}}]
    prompt.render(chat)
    prompt.render(chat)
    assert len(renders) == 2


def test_the_rendering_is_reused_only_for_a_moment(
    prompt: ChatPrompt, renders: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some templates write the date: a memo must not outlive the request it serves.
    monkeypatch.setattr(chat_prompt, "MEMO_S", 0.0)
    prompt.render(CHAT)
    prompt.render(CHAT)
    assert len(renders) == 2


def test_the_stops_handed_out_are_the_callers_own(prompt: ChatPrompt, renders: list[Any]) -> None:
    _, stops = prompt.render_with_stops(CHAT)
    stops.append("mine")
    assert "mine" not in prompt.render_with_stops(CHAT)[1]
    assert len(renders) == 1
