"""The OpenAI-compatible API with the official SDK and LiteLLM, against real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from speculate.core.protocol import decode_event
from speculate.core.text import ShownText
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

MESSAGES: list[Any] = [{"role": "user", "content": "Give me two tips for better sleep."}]


def result(server: ServerProcess, request_id: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{server.url}/v1/requests/{request_id}").json()
    return data


def sdk(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_list(server: ServerProcess) -> None:
    names = [m.id for m in sdk(server).models.list()]
    assert names[0] == "speculate"
    assert {"speculate-edge", "speculate-cloud", "speculate-speculative"} <= set(names)


def test_sdk_sync_without_streaming(server: ServerProcess) -> None:
    completion = sdk(server).chat.completions.create(
        model="speculate-speculative", messages=MESSAGES, max_tokens=40
    )
    text = completion.choices[0].message.content
    assert text
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0
    extension = (completion.model_extra or {})["speculate"]
    assert extension["final_source"] == "cloud"
    assert result(server, completion.id)["text"] == text


def test_sdk_sync_streaming_is_append_only_with_usage(server: ServerProcess) -> None:
    stream = sdk(server).chat.completions.create(
        model="speculate-speculative",
        messages=MESSAGES,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, request_id, finish = [], None, "", None
    for chunk in stream:
        request_id = chunk.id
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) > 1  # streamed in several pieces, not in one at the end
    assert "".join(pieces) == result(server, request_id)["text"]
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # length when the 40-token limit ended the answer, stop when the model did
    assert finish == ("length" if usage.completion_tokens >= 40 else "stop")


def test_content_parts_developer_role_and_a_length_finish(server: ServerProcess) -> None:
    """What the SDKs and chat UIs send: content as text parts, the developer role."""
    messages: list[Any] = [
        {"role": "developer", "content": [{"type": "text", "text": "Answer briefly."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Give me two tips"},
                {"type": "text", "text": "for better sleep."},
            ],
        },
    ]
    completion = sdk(server).chat.completions.create(
        model="speculate-edge", messages=messages, max_tokens=5
    )
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "length"  # 5 tokens cut it short
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(server).chat.completions.create(
            model="speculate-edge",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:,"}}],
                }
            ],
        )
    assert "only text parts are supported" in str(refused.value)
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["param"] == "messages.0.content"


async def test_sdk_async_streaming_and_not(server: ServerProcess) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with anyio.fail_after(120):
        completion = await client.chat.completions.create(
            model="speculate-edge", messages=MESSAGES, max_tokens=24
        )
        assert (completion.model_extra or {})["speculate"]["final_source"] == "edge"
        stream = await client.chat.completions.create(
            model="speculate-cloud", messages=MESSAGES, max_tokens=24, stream=True
        )
        text, request_id = "", ""
        async for chunk in stream:
            request_id = chunk.id
            for choice in chunk.choices:
                text += choice.delta.content or ""
    assert text == result(server, request_id)["text"]
    await client.close()


def test_sdk_errors_are_openai_shaped(server: ServerProcess) -> None:
    client = sdk(server)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="speculate-speculative", messages=[])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="speculate-speculative", messages=MESSAGES, max_tokens=10**7
        )


def test_opt_in_extension_carries_drafts_and_corrections(server: ServerProcess) -> None:
    body = {
        "model": "speculate-speculative",
        "messages": MESSAGES,
        "max_tokens": 40,
        "stream": True,
        "speculate": {"events": True},
    }
    events, plain = ShownText(), ""
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "speculate" in chunk:
                events.apply(decode_event(chunk["speculate"]))
            for choice in chunk["choices"]:
                plain += choice["delta"].get("content") or ""
    assert events.done is not None
    assert plain == events.done.text  # the plain part never saw retracted text


def test_litellm_with_and_without_streaming(server: ServerProcess) -> None:
    # LiteLLM is imported in a child process: it is slow to import and patches globals.
    script = f"""
import json, litellm
kw = dict(model="openai/speculate", api_base="{server.url}/v1", api_key="unused",
          messages={MESSAGES!r}, max_tokens=24)
whole = litellm.completion(**kw)
parts = [c.choices[0].delta.content or "" for c in litellm.completion(stream=True, **kw)]
print(json.dumps({{"id": whole.id, "text": whole.choices[0].message.content,
                  "streamed": "".join(parts)}}))
"""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no price-list download
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["text"] == result(server, out["id"])["text"]
    assert out["streamed"]


def test_metrics_are_scraped_after_traffic(server: ServerProcess) -> None:
    sdk(server).chat.completions.create(
        model="speculate-speculative", messages=MESSAGES, max_tokens=16
    )
    text = httpx.get(f"{server.url}/metrics").text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['speculate_requests_total{outcome="final_cloud",route="speculative"}'] >= 1
    assert samples['speculate_tokens_total{side="cloud"}'] > 0
    assert samples["speculate_final_seconds_count" + '{route="speculative"}'] >= 1
    assert samples["speculate_cost_usd_total"] > 0
    assert "speculate_edge_queue_depth" in samples
    assert "speculate_active_requests" in samples


def test_report_on_the_log_of_this_run(server: ServerProcess, tmp_path: Path) -> None:
    sdk(server).chat.completions.create(model="speculate-edge", messages=MESSAGES, max_tokens=8)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "speculate.cli",
            "report",
            "--db",
            server.db_path,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "160", "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert "requests by route" in done.stdout
    assert "all cloud" in done.stdout
    assert "fleet projection" in done.stdout
    for name in ("latency.png", "routes.png", "cost.png", "fleet.png"):
        assert (tmp_path / name).stat().st_size > 5_000


TIP_SCHEMA = {
    "type": "object",
    "properties": {"tip": {"type": "string", "maxLength": 60}},
    "required": ["tip"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("model", ["speculate-edge", "speculate"])
def test_a_json_schema_gives_valid_json_from_the_edge_and_the_cloud(
    server: ServerProcess, model: str
) -> None:
    """On the edge a grammar built from the schema constrains the draft; through the
    cloud (the stand-in, as vLLM does) the schema goes with the request."""
    completion = sdk(server).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "One tip for better sleep, as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "tip", "schema": TIP_SCHEMA},
        },
        max_tokens=120,
    )
    extension = (completion.model_extra or {})["speculate"]
    assert extension["route"] == ("edge" if model == "speculate-edge" else "cloud")
    content = completion.choices[0].message.content
    assert content is not None
    answer = json.loads(content)
    assert set(answer) == {"tip"}
    assert isinstance(answer["tip"], str)
    assert len(answer["tip"]) <= 60


def test_stop_and_seed_on_the_real_edge(server: ServerProcess) -> None:
    ask = {
        "model": "speculate-edge",
        "messages": [{"role": "user", "content": "List three fruits, one per line."}],
        "max_tokens": 60,
    }
    whole = sdk(server).chat.completions.create(**ask).choices[0].message.content
    assert whole
    stopped = sdk(server).chat.completions.create(**ask, stop=["\n"]).choices[0]
    assert "\n" not in (stopped.message.content or "")
    assert stopped.finish_reason == "stop"
    # A seed makes sampling at temperature 1 repeatable.  Compared: two runs that both
    # find the prompt already evaluated (after a first run), so both take the same
    # arithmetic path on any CPU.
    seeded = {**ask, "temperature": 1.0, "seed": 1234, "max_tokens": 12}
    runs = [sdk(server).chat.completions.create(**seeded) for _ in range(3)]
    texts = [run.choices[0].message.content for run in runs]
    assert texts[1] == texts[2]
