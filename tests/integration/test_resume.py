"""Requests that outlive their connection: WebSocket resume, detached SSE, cancel."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anyio
import httpx
import pytest
import websockets

from speculate.client import ws_url
from speculate.core.protocol import SSEDecoder, decode_event
from speculate.core.text import ShownText
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.slow

BODY = {
    "messages": [{"role": "user", "content": "List ten animals, one per line."}],
    "max_tokens": 96,
}


async def test_ws_drop_then_resume_loses_nothing_and_repeats_nothing(server: ServerProcess) -> None:
    shown = ShownText()
    with anyio.fail_after(120):
        async with websockets.connect(ws_url(server.url)) as socket:
            await socket.send(json.dumps({"type": "speculate", "request_id": "drop-1", **BODY}))
            while shown.last_seq < 3:
                shown.apply(decode_event(str(await socket.recv())))
        # The socket is gone mid-answer; a new one picks up where we were.
        async with websockets.connect(ws_url(server.url)) as socket:
            resume = {"type": "resume", "request_id": "drop-1", "after": shown.last_seq}
            await socket.send(json.dumps(resume))
            while not shown.finished:
                shown.apply(decode_event(str(await socket.recv())))  # checks seq has no gap
    assert shown.done is not None
    async with httpx.AsyncClient() as client:
        result = (await client.get(f"{server.url}/v1/requests/drop-1")).json()
    assert result["text"] == shown.text


async def test_detached_request_is_followed_with_last_event_id(server: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        started = await client.post(
            f"{server.url}/v1/speculate", json=BODY, headers={"Prefer": "respond-async"}
        )
        assert started.status_code == 202
        events_url = server.url + started.json()["events"]
        assert started.headers["location"] == started.json()["events"]
        shown = ShownText()
        with anyio.fail_after(120):
            while not shown.finished:  # reconnect after every few events, like a flaky link
                headers = {"Last-Event-ID": str(shown.last_seq)}
                async with client.stream("GET", events_url, headers=headers) as response:
                    decoder, taken = SSEDecoder(), 0
                    async for chunk in response.aiter_text():
                        for message in decoder.feed(chunk):
                            shown.apply(decode_event(message.data))
                            taken += 1
                        if taken >= 3 or shown.finished:
                            break
    assert shown.done is not None


async def test_delete_cancels_a_running_request(server: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        started = await client.post(
            f"{server.url}/v1/speculate",
            json={**BODY, "max_tokens": 400},
            headers={"Prefer": "respond-async"},
        )
        request_id = started.json()["request_id"]
        deleted = await client.delete(f"{server.url}/v1/requests/{request_id}")
        assert deleted.status_code == 202
        with anyio.fail_after(30):
            async with client.stream("GET", server.url + started.json()["events"]) as response:
                body = "".join([chunk async for chunk in response.aiter_text()])
        assert '"code":"cancelled"' in body
        again = await client.delete(f"{server.url}/v1/requests/{request_id}")
        assert again.status_code == 409
        missing = await client.delete(f"{server.url}/v1/requests/nope")
        assert missing.status_code == 404


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        str(tmp_path_factory.mktemp("impatient")),
        {"SPECULATE_SERVER__RESUME_GRACE_S": "0.2", "SPECULATE_CLOUD__ENABLED": "false"},
    )
    yield proc
    proc.stop()


async def test_unresumed_request_is_cancelled_after_the_grace_period(
    impatient_server: ServerProcess,
) -> None:
    url = impatient_server.url
    with anyio.fail_after(60):
        async with websockets.connect(ws_url(url)) as socket:
            prompt = "Write a long, detailed story about a dragon who learns to fly."
            body = {
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 2000,
                "mode": "edge",
            }
            await socket.send(json.dumps({"type": "speculate", "request_id": "gone", **body}))
            await socket.recv()
        async with httpx.AsyncClient() as client:
            while True:
                result = (await client.get(f"{url}/v1/requests/gone")).json()
                if result["state"] != "running":
                    break
                await anyio.sleep(0.1)  # polling the public API, bounded by fail_after
    assert result["state"] == "failed", result
    assert result["error"]["code"] == "cancelled"
    assert result["stats"] is None  # cut short: a 2,000-token story cannot end in 0.2 s
