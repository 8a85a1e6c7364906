"""speculate behind nothing and in front of a real LiteLLM proxy: the way a user reaches
OpenAI, Anthropic or Bedrock through one endpoint.  The proxy (``litellm --config``)
forwards to the local stand-in; speculate uses the proxy as its cloud."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import openai
import pytest

from speculate.backends.llamacpp import default_threads
from speculate.backends.models import resolve
from speculate.backends.standin import StandInServer
from speculate.bench.children import LITELLM_MASTER_KEY, LiteLLMProxy
from speculate.core.protocol import Done, Error, SSEDecoder, decode_event
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.slow

MASTER_KEY = LITELLM_MASTER_KEY


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    """The stand-in behind a LiteLLM proxy; yields the proxy's /v1 URL."""
    standin = StandInServer(resolve("smollm2-135m"), alias="standin", n_threads=default_threads())
    with anyio.from_thread.start_blocking_portal() as portal:
        base = portal.call(standin.start)
        try:
            with LiteLLMProxy(base, alias="hosted-model") as gateway:
                yield f"{gateway.url}/v1"
        finally:
            portal.call(standin.stop)


@pytest.fixture(scope="module")
def server(proxy: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "SPECULATE_CLOUD__BASE_URL": proxy,
        "SPECULATE_CLOUD__MODEL": "hosted-model",
        "SPECULATE_CLOUD_API_KEY": MASTER_KEY,
    }
    process = start_server(str(tmp_path_factory.mktemp("behind")), env)
    yield process
    process.stop()


def test_the_cloud_answers_through_the_proxy(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "Give me two tips for better sleep."}]
    completion = client.chat.completions.create(
        model="speculate-speculative", messages=messages, max_tokens=30, stop=["\n\n"]
    )
    extension = (completion.model_extra or {})["speculate"]
    assert extension["final_source"] == "cloud"
    assert extension["stats"]["cloud_tokens"] > 0
    assert "\n\n" not in (completion.choices[0].message.content or "")

    stream = client.chat.completions.create(
        model="speculate-cloud", messages=messages, max_tokens=30, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces)


def test_a_refusal_by_the_gateway_is_reported_not_swallowed(proxy: str, tmp_path: Path) -> None:
    """With a key the gateway refuses, the draft stands and the stream says why: a
    non-fatal cloud error carrying the gateway's own message."""
    env = {
        "SPECULATE_CLOUD__BASE_URL": proxy,
        "SPECULATE_CLOUD__MODEL": "hosted-model",
        "SPECULATE_CLOUD_API_KEY": "sk-not-the-key",
    }
    refused = start_server(str(tmp_path), env)
    try:
        body = {"messages": [{"role": "user", "content": "Hello there."}], "mode": "speculative"}
        events = []
        with httpx.stream(
            "POST", f"{refused.url}/v1/speculate", json={**body, "max_tokens": 16}, timeout=120
        ) as response:
            decoder = SSEDecoder()
            for text in response.iter_text():
                events += [decode_event(m.data) for m in decoder.feed(text)]
    finally:
        refused.stop()
    errors = [e for e in events if isinstance(e, Error)]
    assert len(errors) == 1
    assert errors[0].source == "cloud"
    assert not errors[0].fatal
    direct = httpx.post(
        f"{proxy}/chat/completions",
        json={"model": "hosted-model", **body},
        headers={"Authorization": "Bearer sk-not-the-key"},
        timeout=60,
    )
    assert direct.status_code >= 400
    said = direct.json()["error"]["message"]
    assert f"the cloud answered HTTP {direct.status_code}: {said}" in errors[0].message
    done = events[-1]
    assert isinstance(done, Done)
    assert done.final_source == "edge"
