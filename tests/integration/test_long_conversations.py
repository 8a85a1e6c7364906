"""Long conversations through the real server: trimmed per model, never an internal
error, a last turn too long for any window refused up front, and what the edge has
evaluated reused by the next turn (kept across other conversations, or sent ahead)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
import websockets

from speculate.client import stream_sse, ws_url
from speculate.core.protocol import Done, Error, Event, Start, decode_event
from speculate.core.text import ShownText
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

INTERNALS = ("ExceptionGroup", "Traceback", "Error(", "<", "repr", 'File "')


def conversation(turns: int, topic: str = "sleep", answer_words: int = 90) -> list[dict[str, str]]:
    """A chat like the browser UI resends: every turn so far, then a new question."""
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Give me tip {i + 1} about {topic}."})
        answer = f"Tip {i + 1} about {topic}: keep a steady routine and rest well. " * (
            answer_words // 12
        )
        messages.append({"role": "assistant", "content": answer.strip()})
    messages.append({"role": "user", "content": f"Summarise the {topic} tips in one line."})
    return messages


async def run(server: ServerProcess, body: dict[str, Any]) -> tuple[Start, Done, list[Event]]:
    shown = ShownText()
    events: list[Event] = []
    with anyio.fail_after(240):
        async for event in stream_sse(server.url, body):
            events.append(event)
            shown.apply(event)
    assert isinstance(events[0], Start)
    errors = [e for e in events if isinstance(e, Error)]
    assert not errors, errors
    assert shown.done is not None
    return events[0], shown.done, events


@pytest.mark.parametrize("mode", ["edge", "speculative"])
async def test_a_conversation_longer_than_the_windows_is_trimmed_not_failed(
    server: ServerProcess, mode: str
) -> None:
    """22 turns (~3,000 tokens) for 2,048-token windows: the answer comes, and start says
    how many of the oldest turns each side left out."""
    messages = conversation(22)
    start, done, _ = await run(server, {"messages": messages, "mode": mode, "max_tokens": 16})
    dropped = start.fields()["dropped_turns"]
    assert dropped["edge"] > 0
    if mode == "speculative":
        assert dropped["cloud"] > 0
        assert done.final_source == "cloud"
    assert done.text
    # What the edge was given fits its window with room for the answer.
    assert 0 < done.stats["prompt_tokens"] <= 2048 - 16


async def test_a_last_message_too_long_for_every_window_is_a_400_before_anything_runs(
    server: ServerProcess,
) -> None:
    too_long = [{"role": "user", "content": "word " * 6000}]
    async with httpx.AsyncClient(timeout=30) as client:
        sse = await client.post(f"{server.url}/v1/speculate", json={"messages": too_long})
        openai = await client.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "speculate", "messages": too_long},
        )
    assert sse.status_code == 400
    assert sse.json()["error"]["code"] == "context_too_long"
    assert openai.status_code == 400
    error = openai.json()["error"]
    assert error["code"] == "context_too_long"
    assert error["param"] == "messages"
    for message in (sse.json()["error"]["message"], error["message"]):
        assert "window" in message
        assert "tokens" in message
        for internal in INTERNALS:
            assert internal not in message, message
    async with websockets.connect(ws_url(server.url)) as socket:
        await socket.send(json.dumps({"type": "speculate", "messages": too_long}))
        with anyio.fail_after(30):
            event = decode_event(str(await socket.recv()))
    assert isinstance(event, Error)
    assert event.fatal
    assert event.code == "context_too_long"
    assert event.seq == 1  # nothing ran: the refusal is the whole stream


async def test_a_follow_up_reuses_the_edge_prompt_kept_across_another_conversation(
    server: ServerProcess,
) -> None:
    """A's history is evaluated, then B's takes over the edge's cache; A's next turn gets
    A's evaluated prompt back instead of evaluating it again."""
    a, b = conversation(8, "sleep"), conversation(8, "cooking")
    _, first, _ = await run(server, {"messages": a, "mode": "edge", "max_tokens": 8})
    await run(server, {"messages": b, "mode": "edge", "max_tokens": 8})
    follow_up = [
        *a,
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And one more tip?"},
    ]
    _, again, _ = await run(server, {"messages": follow_up, "mode": "edge", "max_tokens": 8})
    history_tokens = first.stats["prompt_tokens"]
    assert history_tokens > 300
    # Everything up to A's last question was held; only the new turn was evaluated.
    assert again.stats["edge_cached_tokens"] >= history_tokens - 8


async def test_a_conversation_sent_ahead_is_evaluated_before_the_request(
    server: ServerProcess,
) -> None:
    history = conversation(8, "gardening")[:-1]
    async with httpx.AsyncClient(timeout=120) as client:
        warmed = await client.post(
            f"{server.url}/v1/prewarm",
            json={"messages": [*history, {"role": "user", "content": "Which"}]},
        )
    assert warmed.status_code == 200
    # On a failure the server's log says why (the prewarm's answer carries no reason).
    assert warmed.json() == {"edge": "warmed", "cloud": "warmed"}, server.log()[-3000:]
    messages = [*history, {"role": "user", "content": "Which tip matters most?"}]
    _, done, _ = await run(server, {"messages": messages, "mode": "edge", "max_tokens": 8})
    # The request found the history in the edge's cache: only the new question was new.
    assert done.stats["edge_cached_tokens"] >= done.stats["prompt_tokens"] - 16
    assert done.stats["edge_cached_tokens"] > 300


async def test_prewarm_refuses_bad_input_like_a_request(server: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        bad = await client.post(f"{server.url}/v1/prewarm", json={"messages": []})
        extra = await client.post(
            f"{server.url}/v1/prewarm",
            json={"messages": [{"role": "user", "content": "x"}], "mode": "edge"},
        )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "bad_request"
    assert extra.status_code == 400
