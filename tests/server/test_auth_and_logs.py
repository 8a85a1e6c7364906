"""API keys, structured logs and the request log's privacy, on a real in-process server."""

from __future__ import annotations

import base64
import io
import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import websockets
from websockets.typing import Subprotocol

from speculate.client import ws_url
from speculate.core.protocol import Done, Start
from speculate.core.request import SpeculateRequest
from speculate.core.summary import RunSummary
from speculate.engine.context import Backends
from speculate.engine.eventlog import EventLog
from speculate.server import create_app
from speculate.server.auth import key_matches
from speculate.server.logs import JsonFormatter, RequestLogger
from speculate.settings import Settings
from speculate.storage.request_log import RequestLog
from tests.scripted import BookBackend, Script, ScriptBook
from tests.servers import serve_in_thread

KEY = "sk-test-0123456789"
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    book = ScriptBook({}, Script(draft="Hello there.", cloud="Hello!", cloud_start_s=0.01))
    backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
    db = tmp_path_factory.mktemp("locked") / "requests.db"
    settings = Settings(server={"api_keys": [KEY, "sk-other"]}, store={"path": str(db)})  # type: ignore[arg-type]
    with serve_in_thread(create_app(settings, backends), settings) as url:
        yield url


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/speculate"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/requests/x"),
        ("DELETE", "/v1/requests/x"),
        ("GET", "/v1/speculate/x/events"),
    ],
)
def test_every_v1_route_wants_a_key(locked_server: str, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        response = httpx.request(method, locked_server + path, json=BODY, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"


def test_health_and_ui_stay_open(locked_server: str) -> None:
    assert httpx.get(f"{locked_server}/healthz").status_code == 200
    assert httpx.get(f"{locked_server}/readyz").status_code == 200
    page = httpx.get(f"{locked_server}/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert httpx.get(f"{locked_server}/app.js").status_code == 200
    metrics = httpx.get(f"{locked_server}/metrics")
    assert metrics.status_code == 200
    assert "speculate_active_requests" in metrics.text


def test_the_right_key_is_accepted_by_the_sdk(locked_server: str) -> None:
    client = openai.OpenAI(base_url=f"{locked_server}/v1", api_key=KEY, max_retries=0)
    answer = client.chat.completions.create(
        model="speculate-speculative", messages=BODY["messages"]
    )  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "Hello!"
    wrong = openai.OpenAI(base_url=f"{locked_server}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


async def test_websocket_needs_the_key(locked_server: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url(locked_server)):
            pass
    assert refused.value.response.status_code == 403
    headers = {"Authorization": f"Bearer {KEY}"}
    async with websockets.connect(ws_url(locked_server), additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "speculate", **BODY}))
        assert json.loads(await ws.recv())["event"] == "start"
    async with websockets.connect(ws_url(locked_server) + f"?api_key={KEY}") as ws:
        await ws.send(json.dumps({"type": "speculate", **BODY}))
        assert json.loads(await ws.recv())["event"] == "start"


def bearer_protocol(key: str) -> Subprotocol:
    encoded = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
    return Subprotocol("speculate.bearer." + encoded)


async def test_a_browser_websocket_sends_the_key_as_a_subprotocol(locked_server: str) -> None:
    """What the browser UI does: no header, no key in the URL (access logs keep URLs)."""
    offered = [Subprotocol("speculate"), bearer_protocol(KEY)]
    async with websockets.connect(ws_url(locked_server), subprotocols=offered) as ws:
        assert ws.subprotocol == "speculate"  # the server picks one offered, as browsers need
        await ws.send(json.dumps({"type": "speculate", **BODY}))
        assert json.loads(await ws.recv())["event"] == "start"
    for wrong in (bearer_protocol("nope"), Subprotocol("speculate.bearer.%%%")):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(
                ws_url(locked_server), subprotocols=[Subprotocol("speculate"), wrong]
            ):
                pass
        assert refused.value.response.status_code == 403


def test_key_comparison() -> None:
    assert key_matches("a", ["b", "a"])
    assert not key_matches("", ["a"])
    assert not key_matches("a" * 3, ["a"])


def finished_log(prompt_secret: str) -> tuple[SpeculateRequest, RunSummary]:
    request = SpeculateRequest(
        messages=[{"role": "user", "content": prompt_secret}], request_id="req_logtest"
    )
    events = EventLog(request.request_id)
    events.extend(
        [
            Start(
                request_id="req_logtest",
                seq=1,
                route="edge",
                reason="r",
                edge_model="e",
                cloud_model=None,
            ),
            Done(
                request_id="req_logtest",
                seq=2,
                text="answer",
                final_source="edge",
                stats={"final_ms": 12.5, "draft_tokens": 3},
            ),
        ]
    )
    return request, events.summary()


async def test_json_request_logs_carry_ids_but_no_prompt_text() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("speculate.requests")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        await RequestLogger().finished(*finished_log("MY SECRET PROMPT"))
    finally:
        logger.removeHandler(handler)
    line = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert line["request"]["request_id"] == "req_logtest"
    assert line["request"]["outcome"] == "done"
    assert "SECRET" not in buffer.getvalue()


async def test_request_log_file_is_private_and_has_no_prompt(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = RequestLog(path)
    await store.finished(*finished_log("MY SECRET PROMPT"))
    store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"SECRET" not in path.read_bytes()
    keeping = RequestLog(tmp_path / "with-prompts.db", keep_prompts=True)
    await keeping.finished(*finished_log("KEPT PROMPT"))
    keeping.close()
    assert b"KEPT PROMPT" in (tmp_path / "with-prompts.db").read_bytes()
