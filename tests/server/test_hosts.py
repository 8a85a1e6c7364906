"""DNS rebinding and cross-site requests: the exact requests of the attack, refused before
any work; the names a user really uses, served."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.server.hosts import host_name
from speculate.settings import Settings
from tests.scripted import BookBackend, Script, ScriptBook
from tests.servers import serve_in_thread

EVIL = "evil.example:8766"
BODY = {"messages": [{"role": "user", "content": "hi"}], "mode": "edge"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    book = ScriptBook({}, Script(draft="A draft.", cloud="An answer."))
    backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
    settings = Settings(
        server={"rate_per_minute": 0, "allowed_hosts": ["speculate.lan"]},  # type: ignore[arg-type]
        store={"request_log": False},  # type: ignore[arg-type]
    )
    with serve_in_thread(create_app(settings, backends), settings) as base:
        yield base


def handshake(url: str, host: str, origin: str | None = None) -> str:
    """The WebSocket upgrade by hand (clients set Host themselves): the status line."""
    parts = urlsplit(url)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /v1/ws HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return conn.recv(4096).decode("latin-1").split("\r\n", 1)[0]


def test_the_rebinding_requests_are_refused_before_any_work(url: str) -> None:
    headers = {"Host": EVIL, "Origin": f"http://{EVIL}"}
    posted = httpx.post(f"{url}/v1/speculate", json=BODY, headers=headers, timeout=10)
    assert posted.status_code == 403
    assert posted.json()["error"]["code"] == "forbidden"
    assert "allowed_hosts" in posted.json()["error"]["message"]
    openai = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "speculate", "messages": BODY["messages"]},
        headers=headers,
        timeout=10,
    )
    assert openai.status_code == 403
    assert openai.json()["error"]["code"] == "forbidden"  # OpenAI's shape on its route
    for path in ("/", "/healthz", "/readyz", "/metrics", "/v1/models"):
        assert httpx.get(f"{url}{path}", headers={"Host": EVIL}, timeout=10).status_code == 403
    assert " 403 " in handshake(url, EVIL, f"http://{EVIL}")
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert "speculate_requests_total{" not in metrics  # nothing ran


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "[::1]", "speculate.lan", "app.localhost", "10.1.2.3"]
)
def test_names_a_user_really_uses_are_served(url: str, host: str) -> None:
    port = urlsplit(url).port
    answer = httpx.get(f"{url}/healthz", headers={"Host": f"{host}:{port}"}, timeout=10)
    assert answer.status_code == 200
    assert " 101 " in handshake(url, f"{host}:{port}")


def test_a_foreign_page_cannot_post_to_the_local_server(url: str) -> None:
    host = urlsplit(url).netloc
    foreign = httpx.post(
        f"{url}/v1/speculate", json=BODY, headers={"Origin": "https://evil.example"}, timeout=10
    )
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "forbidden"
    own = httpx.post(f"{url}/v1/speculate", json=BODY, headers={"Origin": f"http://{host}"})
    assert own.status_code == 200
    assert " 403 " in handshake(url, host, "https://evil.example")


def test_host_names_are_read_like_a_server_reads_them() -> None:
    assert host_name("Example.COM.:8000") == "example.com"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("localhost") == "localhost"
