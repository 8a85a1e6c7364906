"""Protocol edge cases of the cloud client, driven through httpx.MockTransport.

The real server (llama_cpp.server) is exercised by the integration tests; here we
check how our client reacts to what a misbehaving server might send.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
import pytest

from speculate.backends.base import GenerationParams, texts
from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.errors import (
    CloudError,
    CloudHTTPError,
    CloudProtocolError,
    CloudUnreachable,
)
from speculate.settings import CloudSettings
from tests.recording_cloud import Reply, recording_cloud

PARAMS = GenerationParams(max_tokens=8, temperature=0.0)


def chunk(text: str | None = None, finish: str | None = None, **extra: object) -> str:
    delta = {"content": text} if text is not None else {}
    payload = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(payload)}\n\n"


def cloud(
    handler: Callable[[httpx.Request], httpx.Response], **settings: float
) -> OpenAICompatCloud:
    return OpenAICompatCloud(
        CloudSettings(**settings),  # type: ignore[arg-type]
        base_url="http://cloud.test/v1",
        model="m",
        transport=httpx.MockTransport(handler),
    )


async def drain(client: OpenAICompatCloud) -> tuple[list[str], object]:
    pieces = []
    with anyio.fail_after(10):
        async with client.stream([{"role": "user", "content": "hi"}], PARAMS) as tokens:
            while True:
                try:
                    pieces.append(await tokens.receive())
                except anyio.EndOfStream:
                    break
    return pieces, tokens.usage


async def test_parses_chunks_usage_and_done_across_odd_chunking() -> None:
    body = (
        chunk("Hel")
        + chunk("lo")
        + chunk(None, "stop")
        + ('data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n')
        + "data: [DONE]\n\n"
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)

        # Split in 5-byte pieces so lines straddle reads.
        async def parts() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 5):
                yield body[i : i + 5].encode()

        return httpx.Response(200, content=parts(), headers={"content-type": "text/event-stream"})

    pieces, usage = await drain(cloud(handler))
    assert pieces == ["Hel", "lo"]
    assert usage.prompt_tokens == 7  # type: ignore[attr-defined]
    assert usage.finish_reason == "stop"  # type: ignore[attr-defined]
    sent = json.loads(seen[0].content)
    assert sent["stream"] is True
    assert sent["model"] == "m"


@pytest.mark.parametrize(
    "base", ["http://cloud.test/v1", "http://cloud.test/v1/", "https://cloud.test/openai/v1"]
)
async def test_requests_go_to_the_path_under_the_base_url_as_httpx_would_join_it(
    base: str,
) -> None:
    # The client builds each path's full URL once instead of letting httpx join it per
    # request: the two must agree.
    asked: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url)
        return httpx.Response(200, text=chunk("ok", "stop") + "data: [DONE]\n\n")

    client = OpenAICompatCloud(
        CloudSettings(), base_url=base, model="m", transport=httpx.MockTransport(handler)
    )
    for _ in range(2):
        pieces, _ = await drain(client)
        assert pieces == ["ok"]
    joined = httpx.AsyncClient(base_url=base).build_request("POST", "/chat/completions").url
    assert asked == [joined, joined]


async def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_CLOUD_KEY", "sk-test")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=chunk("x") + "data: [DONE]\n\n")

    client = OpenAICompatCloud(
        CloudSettings(api_key_env="TEST_CLOUD_KEY"),
        base_url="http://cloud.test/v1",
        model="m",
        transport=httpx.MockTransport(handler),
    )
    await drain(client)
    assert seen[0].headers["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize(
    ("response", "error", "fragment"),
    [
        (
            httpx.Response(503, text="overloaded", headers={"retry-after": "3"}),
            CloudHTTPError,
            "503",
        ),
        (httpx.Response(200, text="data: {nope\n\n"), CloudProtocolError, "malformed JSON"),
        (httpx.Response(200, text=chunk("a")), CloudProtocolError, "without [DONE]"),
        (httpx.Response(200, text='data: {"error": {"message": "boom"}}\n\n'), CloudError, "boom"),
        (httpx.Response(200, text="data: [1, 2]\n\n"), CloudProtocolError, "non-object"),
    ],
)
async def test_failures_map_into_the_exception_tree(
    response: httpx.Response, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment.replace("[", r"\[")) as caught:
        await drain(cloud(lambda request: response))
    if isinstance(caught.value, CloudHTTPError):
        assert caught.value.status == 503
        assert caught.value.retry_after_s == 3.0


async def test_connection_refused_is_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(CloudUnreachable):
        await drain(cloud(handler))


async def test_first_token_and_stall_timeouts_are_separate() -> None:
    async def slow_start() -> AsyncIterator[bytes]:
        await anyio.sleep(5)
        yield b""

    async def stall() -> AsyncIterator[bytes]:
        yield chunk("a").encode()
        await anyio.sleep(5)
        yield b""

    def start_handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=slow_start())

    def stall_handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=stall())

    with pytest.raises(CloudError) as first:
        await drain(cloud(start_handler, first_token_timeout_s=0.2, stall_timeout_s=1))
    assert first.value.code == "cloud_first_token_timeout"
    with pytest.raises(CloudError) as stalled:
        await drain(cloud(stall_handler, first_token_timeout_s=1, stall_timeout_s=0.2))
    assert stalled.value.code == "cloud_stalled"
    with pytest.raises(CloudError) as total:
        await drain(
            cloud(stall_handler, first_token_timeout_s=1, stall_timeout_s=1, total_timeout_s=0.3)
        )
    assert total.value.code == "cloud_total_timeout"


async def test_leaving_early_closes_the_http_response_at_once() -> None:
    responses: list[httpx.Response] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield chunk("more ").encode()
            await anyio.sleep(0.01)

    def handler(request: httpx.Request) -> httpx.Response:
        responses.append(httpx.Response(200, content=endless()))
        return responses[-1]

    client = cloud(handler)
    with anyio.fail_after(5):
        async with client.stream([{"role": "user", "content": "hi"}], PARAMS) as tokens:
            assert await tokens.receive() == "more "
            assert not responses[0].is_closed
    assert responses[0].is_closed  # closed on leaving, not when the stream would end


async def test_a_hosted_reasoning_model_gets_the_shape_it_wants() -> None:
    """max_completion_tokens instead of max_tokens, no temperature, the endpoint's own
    headers and body fields."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = chunk("ok") + chunk(None, "stop") + "data: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    client = OpenAICompatCloud(
        CloudSettings(
            token_limit_param="max_completion_tokens",
            send_temperature=False,
            extra_headers={"OpenAI-Organization": "org-1"},
            extra_body={"reasoning_effort": "low", "model": "not-this"},
        ),
        base_url="http://cloud.test/v1",
        model="o-mini",
        transport=httpx.MockTransport(handler),
    )
    pieces, _ = await drain(client)
    assert pieces == ["ok"]
    sent = json.loads(seen[0].content)
    assert sent["max_completion_tokens"] == PARAMS.max_tokens
    assert "max_tokens" not in sent
    assert "temperature" not in sent
    assert sent["reasoning_effort"] == "low"
    assert sent["model"] == "o-mini"  # the body's own fields win over extra_body
    assert seen[0].headers["OpenAI-Organization"] == "org-1"
    await client.aclose()


async def test_a_finished_answer_leaves_its_connection_for_the_next_request() -> None:
    """Over real sockets: the body is read to its end after ``[DONE]``, so the next
    request goes out on the same connection, without a new handshake."""
    with recording_cloud(Reply(pieces=["Hello", " there"])) as server:
        client = OpenAICompatCloud(CloudSettings(), base_url=server.url, model="recorded")
        try:
            for _ in range(3):
                pieces, _usage = await drain(client)
                assert pieces == ["Hello", " there"]
        finally:
            await client.aclose()
    assert len(server.peers) == 3
    assert len(set(server.peers)) == 1, server.peers


async def test_an_unfinished_answer_is_not_read_on() -> None:
    """Leaving before ``[DONE]`` closes the connection at once (the answer stops
    costing tokens); the next request makes a new one."""
    reply = Reply(pieces=["word "] * 50, gap_s=0.05)
    with recording_cloud(reply) as server:
        client = OpenAICompatCloud(CloudSettings(), base_url=server.url, model="recorded")
        try:
            for _ in range(2):
                with anyio.fail_after(10):
                    async with client.stream([{"role": "user", "content": "hi"}], PARAMS) as t:
                        assert await t.receive() == "word "
        finally:
            await client.aclose()
    assert len(set(server.peers)) == 2, server.peers


async def test_on_sent_is_told_once_when_the_request_has_left() -> None:
    """On a new connection it is told as the connection begins; on a reused one (no
    handshake to report) when the body is written.  Either way once, and before the
    answer's headers are back (the stream opens then)."""
    with recording_cloud(Reply(pieces=["Hi"])) as server:
        client = OpenAICompatCloud(CloudSettings(), base_url=server.url, model="recorded")
        try:
            for _ in range(2):
                told: list[int] = []
                params = GenerationParams(8, 0.0, on_sent=functools.partial(told.append, 1))
                with anyio.fail_after(10):
                    async with client.stream([{"role": "user", "content": "hi"}], params) as t:
                        assert told == [1]
                        assert [piece async for piece in texts(t)] == ["Hi"]
                assert told == [1]
        finally:
            await client.aclose()
    assert len(set(server.peers)) == 1  # the second went out on the first's connection
