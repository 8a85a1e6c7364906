"""Bad input and limits: each gets a clear 4xx/503 or close code, while a healthy
stream running at the same time completes correctly."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import websockets
from websockets.sync.client import connect

from speculate.client import stream_sse, ws_url
from speculate.core.text import ShownText
from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.settings import Settings
from tests.scripted import BookBackend, Script, ScriptBook
from tests.servers import serve_in_thread

HEALTHY = Script(
    draft="A healthy draft that takes a little while to stream out completely.",
    cloud="A healthy answer that also takes a little while to arrive in full.",
    draft_delay_s=0.03,
    cloud_delay_s=0.05,
    cloud_start_s=0.2,
)
SLOW = Script(
    draft=" ".join(["slow"] * 200),
    cloud=" ".join(["slow"] * 200),
    draft_delay_s=0.05,
    cloud_delay_s=0.05,
    cloud_start_s=0.1,
)
LIMITS = {
    "max_prompt_chars": 2000,
    "max_tokens_limit": 512,
    "ws_max_message_bytes": 64 * 1024,
    "max_concurrent_streams": 4,
    "rate_per_minute": 6000,
    "rate_burst": 500,
    "ws_messages_per_second": 20,
    "allowed_origins": ["https://app.example"],
    "cors_origins": ["https://app.example"],
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    book = ScriptBook({"healthy": HEALTHY, "slow": SLOW}, HEALTHY)
    backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
    settings = Settings(server=LIMITS, store={"request_log": False})  # type: ignore[arg-type]
    with serve_in_thread(create_app(settings, backends), settings) as base:
        yield base


def healthy_alongside(url: str, attack: Callable[[], None]) -> None:
    """Run a healthy stream while ``attack`` runs; the stream must end right."""
    result: dict[str, Any] = {}

    def healthy() -> None:
        async def main() -> None:
            shown = ShownText()
            body = {"messages": [{"role": "user", "content": "healthy"}], "mode": "speculative"}
            with anyio.fail_after(30):
                async for event in stream_sse(url, body):
                    shown.apply(event)
            result["shown"] = shown

        anyio.run(main)

    thread = threading.Thread(target=healthy)
    thread.start()
    attack()
    thread.join(timeout=60)
    shown = result["shown"]
    assert shown.done is not None
    assert shown.text == HEALTHY.cloud


def post(url: str, payload: bytes, path: str = "/v1/speculate") -> httpx.Response:
    return httpx.post(
        url + path, content=payload, headers={"content-type": "application/json"}, timeout=30
    )


async def wait_for_active(url: str, count: int) -> None:
    """Until the server reports ``count`` running requests (bounded)."""
    async with httpx.AsyncClient() as client:
        with anyio.fail_after(10):
            while True:  # another thread's server offers no event: poll its metrics
                metrics = (await client.get(f"{url}/metrics")).text
                if f"speculate_active_requests {count}.0" in metrics:
                    return
                await anyio.sleep(0.02)


BAD_BODIES = [
    (b"", "empty"),
    (b"{oops", "not valid JSON"),
    (b'"a string"', "JSON object"),
    (b'{"messages": "hi"}', "messages"),
    (b'{"messages": [{"role": "user"}]}', "content"),
    (b'{"messages": [{"role": "user", "content": 5}]}', "content"),
    (b'{"messages": [{"role": "wizard", "content": "x"}]}', "role"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}', "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}', "at most"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}', "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 9}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "x"}], "surprise": 1}', "surprise"),
    (b'{"messages": [{"role": "user", "content": "\\udc00 lone"}]}', "surrogate"),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 3000}]}).encode(), "longer"),
    (b"[" * 100_000, "larger than"),
]


@pytest.mark.parametrize(("payload", "fragment"), BAD_BODIES, ids=[f[1] for f in BAD_BODIES])
def test_bad_bodies_get_400_with_json(url: str, payload: bytes, fragment: str) -> None:
    def attack() -> None:
        response = post(url, payload)
        assert response.status_code == 400, response.text
        assert fragment in response.json()["error"]["message"]

    healthy_alongside(url, attack)


def test_bad_openai_bodies_get_openai_errors(url: str) -> None:
    response = post(url, b'{"model": "speculate", "messages": []}', "/v1/chat/completions")
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_oversized_websocket_frame_closes_1009(url: str) -> None:
    def attack() -> None:
        with connect(ws_url(url)) as ws:
            ws.send("x" * (128 * 1024))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009

    healthy_alongside(url, attack)


def test_message_flood_closes_1008(url: str) -> None:
    def attack() -> None:
        with connect(ws_url(url)) as ws, pytest.raises(websockets.ConnectionClosed) as closed:  # noqa: PT012 - the flood is the act under test
            for _ in range(200):
                ws.send(json.dumps({"type": "cancel", "request_id": "nothing"}))
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        assert "too many messages" in closed.value.rcvd.reason

    healthy_alongside(url, attack)


def test_too_many_streams_get_503_and_1013(url: str) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "slow"}]})
    with connect(ws_url(url)) as holder:
        for i in range(3):  # + the healthy stream = the limit of 4
            holder.send(
                json.dumps({"type": "speculate", "request_id": f"hold{i}", **json.loads(body)})
            )
        holder.recv(timeout=10)

        def attack() -> None:
            with anyio.from_thread.start_blocking_portal() as portal:
                portal.call(wait_for_active, url, 4)
            refused = post(url, body.encode())
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "overloaded"
            assert refused.headers["retry-after"] == "1"
            with connect(ws_url(url)) as ws:
                ws.send(json.dumps({"type": "speculate", **json.loads(body)}))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1013

        healthy_alongside(url, attack)
        for i in range(3):
            holder.send(json.dumps({"type": "cancel", "request_id": f"hold{i}"}))


def test_rate_limit_gets_429(tmp_path_factory: pytest.TempPathFactory) -> None:
    book = ScriptBook({}, Script(draft="ok", cloud="ok"))
    backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
    settings = Settings(
        server={"rate_per_minute": 60, "rate_burst": 3}, store={"request_log": False}
    )  # type: ignore[arg-type]
    body = b'{"messages": [{"role": "user", "content": "x"}], "mode": "edge"}'
    with serve_in_thread(create_app(settings, backends), settings) as base:
        codes = [post(base, body).status_code for _ in range(5)]
        limited = post(base, body)
    assert codes[:3] == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1


async def test_websocket_origin_allowlist(url: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url(url), origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    host = url.removeprefix("http://")
    for origin in ("https://app.example", f"http://{host}"):
        async with websockets.connect(ws_url(url), origin=origin) as ws:  # type: ignore[arg-type]
            await ws.send(
                json.dumps({"type": "speculate", "messages": [{"role": "user", "content": "x"}]})
            )
            assert json.loads(await ws.recv())["event"] == "start"


async def test_permessage_deflate_is_off(url: str) -> None:
    async with websockets.connect(ws_url(url)) as ws:  # the client offers deflate
        assert ws.response is not None
        assert "sec-websocket-extensions" not in ws.response.headers


def test_cors_only_for_configured_origins(url: str) -> None:
    preflight = {"access-control-request-method": "POST"}
    ok = httpx.options(
        f"{url}/v1/speculate", headers={"origin": "https://app.example", **preflight}
    )
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    bad = httpx.options(
        f"{url}/v1/speculate", headers={"origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in bad.headers


@pytest.mark.parametrize("depth", [40, 30_000])  # 60 KB: under the body limit
def test_deeply_nested_json_gets_400_not_500(url: str, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    for path in ("/v1/speculate", "/v1/chat/completions"):
        response = post(url, body, path)
        assert response.status_code == 400, (path, response.text)
        assert "nested deeper" in response.json()["error"]["message"]
    with connect(ws_url(url)) as ws:
        ws.send(body.decode())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1007
