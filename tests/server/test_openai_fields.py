"""Every field of OpenAI's chat completions request is honoured or refused by name,
checked with the openai SDK against a real server whose cloud records what it is sent
(over real sockets) and whose edge is scripted: the thing under test is our handling
of the fields, not a model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import completion_create_params

from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.core.protocol import Error, SSEDecoder, decode_event
from speculate.core.text import ShownText
from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.server.openai_fields import (
    CLOUD_BOOKKEEPING,
    CLOUD_SHAPING,
    REFUSED,
    ChatBody,
)
from speculate.settings import Settings
from tests.recording_cloud import RecordingCloud, Reply, recording_cloud
from tests.scripted import ScriptedBackend, words
from tests.servers import serve_in_thread

DRAFT = "A draft answer from the edge."
ANSWER = ["Hello", " there.", "\n", "\nUs", "er: and more"]  # a stop split across pieces
SETTINGS = Settings(
    server={"rate_per_minute": 0},  # type: ignore[arg-type]
    store={"request_log": False, "queue": False, "cache": False},  # type: ignore[arg-type]
)
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]

# A value for every field that differs from its default: what a client sends.
SAMPLES: dict[str, Any] = {
    "max_tokens": 20,
    "max_completion_tokens": 20,
    "temperature": 0.5,
    "top_p": 0.9,
    "seed": 7,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.25,
    "stop": ["\n\nUser:"],
    "n": 1,
    "stream_options": {"include_usage": True},
    "response_format": {"type": "json_object"},
    "tools": [{"type": "function", "function": {"name": "now", "parameters": {}}}],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "modalities": ["text"],
    "user": "user-1",
    "safety_identifier": "hash-1",
    "metadata": {"team": "a"},
    "store": False,
    "service_tier": "auto",
    "prompt_cache_key": "k-1",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"ttl": "1h"},
    "reasoning_effort": "low",
    "verbosity": "low",
    "web_search_options": {},
    "logprobs": True,
    "top_logprobs": 2,
    "logit_bias": {"50256": -100},
    "functions": [{"name": "now"}],
    "function_call": "auto",
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "x"},
    "moderation": {"mode": "block"},
}
# Honoured on both sides: the edge is given it and the cloud is sent it.
BOTH_SIDES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
}
# Honoured by the reply's shape (checked in their own tests below).
SHAPE = {"messages", "model", "stream", "stream_options", "n", "stop", "modalities"}
TOOLS = {"tools", "tool_choice", "parallel_tool_calls", "response_format"}


@pytest.fixture
def cloud() -> Iterator[RecordingCloud]:
    with recording_cloud(Reply(pieces=list(ANSWER))) as cloud:
        yield cloud


@pytest.fixture
def edge() -> ScriptedBackend:
    return ScriptedBackend("edge", words(DRAFT), delay_s=0.01)


@pytest.fixture
def url(cloud: RecordingCloud, edge: ScriptedBackend) -> Iterator[str]:
    remote = OpenAICompatCloud(SETTINGS.cloud, base_url=cloud.url, model="recorded")
    app = create_app(SETTINGS, Backends(edge, remote))
    with serve_in_thread(app, SETTINGS) as url:
        yield url


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def sdk_fields() -> set[str]:
    base = completion_create_params.CompletionCreateParamsBase
    return set(base.__annotations__) | {"stream"}


def test_every_field_the_sdk_sends_has_a_rule_here() -> None:
    ours = set(ChatBody.model_fields)
    missing = sdk_fields() - ours
    assert not missing, f"fields of the SDK that this server does not name: {sorted(missing)}"
    assert sdk_fields() - {"model", "messages"} <= set(SAMPLES) | {"stream"}
    rules = set(BOTH_SIDES) | SHAPE | TOOLS | set(CLOUD_BOOKKEEPING) | set(CLOUD_SHAPING)
    assert sdk_fields() <= rules | set(REFUSED), "a field is neither honoured nor refused"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_field_is_a_400_naming_it(url: str, name: str) -> None:
    body = {"model": "speculate", "messages": MESSAGES, name: SAMPLES[name]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == name
    assert error["type"] == "invalid_request_error"
    assert name in error["message"]


def test_a_refused_field_at_its_default_is_accepted(url: str) -> None:
    body = {"model": "speculate-edge", "messages": MESSAGES, "logprobs": False, "logit_bias": {}}
    assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200


def test_an_unknown_field_is_a_400_naming_it(url: str) -> None:
    body = {"model": "speculate", "messages": MESSAGES, "surprise": 1}
    error = httpx.post(f"{url}/v1/chat/completions", json=body).json()["error"]
    assert error["param"] == "surprise"
    assert "not a field" in error["message"]


@pytest.mark.parametrize("name", sorted(BOTH_SIDES))
def test_a_sampling_field_reaches_both_sides(
    url: str, cloud: RecordingCloud, edge: ScriptedBackend, name: str
) -> None:
    sdk(url).chat.completions.create(
        model="speculate-speculative", messages=MESSAGES, **{name: SAMPLES[name]}
    )
    sent = cloud.bodies[-1]
    wire = "max_tokens" if name.startswith("max_") else name
    assert sent[wire] == SAMPLES[name]
    assert getattr(edge.given[-1], BOTH_SIDES[name]) == SAMPLES[name]


@pytest.mark.parametrize("name", sorted(CLOUD_BOOKKEEPING + CLOUD_SHAPING))
def test_a_cloud_field_is_sent_to_the_cloud(url: str, cloud: RecordingCloud, name: str) -> None:
    sdk(url).chat.completions.create(
        model="speculate-speculative", messages=MESSAGES, **{name: SAMPLES[name]}
    )
    assert cloud.bodies[-1][name] == SAMPLES[name]


@pytest.mark.parametrize("name", sorted(CLOUD_SHAPING))
def test_a_field_only_the_cloud_honours_is_refused_on_the_edge_model(url: str, name: str) -> None:
    body = {"model": "speculate-edge", "messages": MESSAGES, name: SAMPLES[name]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == name


def test_stop_cuts_the_answer_even_split_across_chunks(url: str, cloud: RecordingCloud) -> None:
    stream = sdk(url).chat.completions.create(
        model="speculate-cloud", messages=MESSAGES, stop="\n\nUser:", stream=True
    )
    pieces, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == "Hello there."
    assert finish == "stop"
    assert cloud.bodies[-1]["stop"] == ["\n\nUser:"]


def test_stop_applies_to_the_edge_draft_too(url: str, edge: ScriptedBackend) -> None:
    completion = sdk(url).chat.completions.create(
        model="speculate-edge", messages=MESSAGES, stop=[" answer"]
    )
    assert completion.choices[0].message.content == "A draft"
    assert edge.given[-1].stop == (" answer",)


def test_tool_calls_come_back_as_openai_streams_them(url: str, cloud: RecordingCloud) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "now", "arguments": json.dumps({"zone": "UTC"})},
    }
    cloud.reply = Reply(tool_calls=[call])
    stream = sdk(url).chat.completions.create(
        model="speculate", messages=MESSAGES, tools=SAMPLES["tools"], stream=True
    )
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                seen = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                seen["id"] = delta.id or seen["id"]
                if delta.function is not None:
                    seen["name"] += delta.function.name or ""
                    seen["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert calls == {0: {"id": "call_1", "name": "now", "arguments": '{"zone": "UTC"}'}}
    assert cloud.bodies[-1]["tools"] == SAMPLES["tools"]

    completion = sdk(url).chat.completions.create(
        model="speculate", messages=MESSAGES, tools=SAMPLES["tools"]
    )
    answer = completion.choices[0]
    assert answer.finish_reason == "tool_calls"
    assert answer.message.tool_calls is not None
    assert answer.message.tool_calls[0].function.arguments == '{"zone": "UTC"}'  # type: ignore[union-attr]
    assert answer.message.content is None


def test_a_request_with_tools_goes_to_the_cloud_and_says_why(url: str) -> None:
    body = {
        "model": "speculate-speculative",
        "messages": MESSAGES,
        "tools": SAMPLES["tools"],
        "speculate": {"events": True},
        "stream": True,
    }
    response = httpx.post(f"{url}/v1/chat/completions", json=body)
    chunks = [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]
    events = [chunk["speculate"] for chunk in chunks if "speculate" in chunk]
    assert events[0]["event"] == "start"
    assert events[0]["route"] == "cloud"
    assert "tools" in events[0]["reason"]
    assert not [e for e in events if e["event"] == "draft"]


def test_a_conversation_with_tool_results_is_forwarded_whole(
    url: str, cloud: RecordingCloud, edge: ScriptedBackend
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{}"}}
    conversation: list[Any] = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]
    sdk(url).chat.completions.create(
        model="speculate", messages=conversation, tools=SAMPLES["tools"]
    )
    sent = cloud.bodies[-1]["messages"]
    assert sent[1]["tool_calls"] == [call]
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}
    # The edge, which runs no tools, reads them as text.
    sdk(url).chat.completions.create(model="speculate-edge", messages=conversation)
    told = edge.asked[-1]
    assert [m["role"] for m in told] == ["user", "assistant", "user"]
    assert "12:00" in told[2]["content"]
    assert "now" in told[1]["content"]


def test_tools_on_the_edge_model_are_refused(url: str) -> None:
    body = {"model": "speculate-edge", "messages": MESSAGES, "tools": SAMPLES["tools"]}
    error = httpx.post(f"{url}/v1/chat/completions", json=body).json()["error"]
    assert error["param"] == "tools"


def test_tools_with_personal_data_kept_on_the_device_are_refused(url: str) -> None:
    private = [{"role": "user", "content": "Mail jane.doe@example.com the time."}]
    body = {"model": "speculate", "messages": private, "tools": SAMPLES["tools"]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "kept_on_device"
    assert response.json()["error"]["param"] == "tools"
    assert "privacy" in response.json()["error"]["message"]


def test_a_cloud_refusal_naming_a_parameter_is_reported_with_the_setting_to_change(
    url: str, cloud: RecordingCloud
) -> None:
    cloud.reply = Reply(
        refuse={
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    )
    shown, errors = ShownText(), []
    body = {"messages": MESSAGES, "mode": "speculative"}
    with httpx.stream("POST", f"{url}/v1/speculate", json=body, timeout=30) as response:
        decoder = SSEDecoder()
        for text in response.iter_text():
            for message in decoder.feed(text):
                event = decode_event(message.data)
                shown.apply(event)
                if isinstance(event, Error):
                    errors.append(event)
    assert shown.done is not None
    assert shown.done.final_source == "edge"  # the draft stands
    assert len(errors) == 1
    assert not errors[0].fatal
    assert "Unsupported parameter: 'max_tokens'" in errors[0].message
    assert "cloud.token_limit_param: max_completion_tokens" in errors[0].message


def test_the_draft_streams_as_reasoning_content_when_asked(url: str, cloud: RecordingCloud) -> None:
    cloud.reply = Reply(pieces=list(ANSWER), gap_s=0.05)  # the draft comes first
    body = {
        "model": "speculate-speculative+draft",
        "messages": MESSAGES,
        "stream": True,
        "speculate": {"events": True},
    }
    reasoning, content, drafts = [], [], []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            event = chunk.get("speculate") or {}
            if event.get("event") == "draft":
                drafts.append(event["text"])
            for choice in chunk["choices"]:
                reasoning.append(choice["delta"].get("reasoning_content") or "")
                content.append(choice["delta"].get("content") or "")
    assert "".join(reasoning) == "".join(drafts)
    assert DRAFT.startswith("".join(reasoning))
    assert "".join(reasoning)
    assert "".join(content) == "".join(ANSWER)  # content: only the final text

    plain = sdk(url).chat.completions.create(
        model="speculate-speculative", messages=MESSAGES, stream=True
    )
    for chunk in plain:
        for choice in chunk.choices:
            assert "reasoning_content" not in (choice.delta.model_extra or {})


def test_the_models_list_offers_the_draft_variants(url: str) -> None:
    names = [m.id for m in sdk(url).models.list()]
    assert "speculate+draft" in names
    assert "speculate-speculative+draft" in names
