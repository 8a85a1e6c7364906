"""A new edge model without downtime: swapped in while a stream runs (which finishes on
the old model), used by the next request, the old one freed; a corrupt file refused while
service continues; SIGHUP with a changed config does the same."""

from __future__ import annotations

import gc
import os
import signal
import time
import weakref
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from speculate.backends.models import EMBEDDED
from speculate.core.protocol import SSEDecoder, Start, decode_event
from speculate.core.text import ShownText
from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.settings import Settings
from tests.scripted import BookBackend, Script, ScriptBook
from tests.servers import serve_in_thread, start_server

ADMIN = {"Authorization": "Bearer admin-key"}
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


async def ask(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], on_draft: Any = None
) -> tuple[Start, ShownText]:
    shown, decoder, start = ShownText(), SSEDecoder(), None
    async with client.stream("POST", f"{url}/v1/speculate", json=body) as response:
        assert response.status_code == 200
        async for text in response.aiter_text():
            for message in decoder.feed(text):
                event = decode_event(message.data)
                shown.apply(event)
                if isinstance(event, Start):
                    start = event
                elif event.type == "draft" and on_draft is not None:
                    await on_draft()
                    on_draft = None
    assert start is not None
    return start, shown


@pytest.mark.slow
def test_swap_while_a_stream_runs_then_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    settings = Settings(
        server={"admin_keys": ["admin-key"], "rate_per_minute": 0},  # type: ignore[arg-type]
        cloud={"enabled": False},  # type: ignore[arg-type]
        store={"path": str(tmp_path / "s.db")},  # type: ignore[arg-type]
    )
    app = create_app(settings)
    with serve_in_thread(app, settings) as url:
        state = app.state.speculate
        old = weakref.ref(state.backends.edge)
        swapped: dict[str, Any] = {}

        async def main() -> None:
            async with httpx.AsyncClient(timeout=120) as client:

                async def swap() -> None:
                    answer = await client.post(
                        f"{url}/admin/edge-model", json={"model": "gemma3-270m"}, headers=ADMIN
                    )
                    swapped.update(status=answer.status_code, body=answer.json())

                body = {"messages": STORY, "mode": "edge", "max_tokens": 96}
                start, shown = await ask(client, url, body, on_draft=swap)
                assert swapped["status"] == 200, swapped
                assert swapped["body"]["edge_model"] == "gemma3-270m"
                # The stream that was running finished, on the model it started on.
                assert start.edge_model == "smollm2-135m"
                assert start.edge_model_sha256 == EMBEDDED["smollm2-135m"].sha256
                assert shown.done is not None
                assert shown.done.final_source == "edge"
                assert shown.done.stats["draft_tokens"] > 40

                short = {"messages": [{"role": "user", "content": "Hi"}], "mode": "edge"}
                start, shown = await ask(client, url, {**short, "max_tokens": 8})
                assert start.edge_model == "gemma3-270m"
                assert start.edge_model_sha256 == EMBEDDED["gemma3-270m"].sha256
                assert shown.done is not None
                ready = (await client.get(f"{url}/readyz")).json()
                assert ready["edge"]["sha256"] == EMBEDDED["gemma3-270m"].sha256

                corrupt = tmp_path / "corrupt.gguf"
                corrupt.write_bytes(b"GGUF" + os.urandom(4096))
                refused = await client.post(
                    f"{url}/admin/edge-model", json={"model": str(corrupt)}, headers=ADMIN
                )
                assert refused.status_code == 422
                error = refused.json()["error"]
                assert error["code"] == "model_load_failed"
                assert "gemma3-270m serves on" in error["message"]
                start, shown = await ask(client, url, {**short, "max_tokens": 8})
                assert start.edge_model == "gemma3-270m"  # service went on
                assert shown.done is not None

        anyio.run(main)
        gc.collect()
        assert old() is None  # the old model was freed once its last request ended


def test_admin_requests_need_an_admin_key_and_are_off_without_one() -> None:
    book = ScriptBook({}, Script(draft="d", cloud="c"))
    for keys, status in (([], 403), (["admin-key"], 401)):
        settings = Settings(
            server={"admin_keys": keys, "api_keys": ["user-key"]},  # type: ignore[arg-type]
            store={"request_log": False},  # type: ignore[arg-type]
        )
        backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
        with serve_in_thread(create_app(settings, backends), settings) as url:
            answer = httpx.post(
                f"{url}/admin/edge-model",
                json={"model": "gemma3-270m"},
                headers={"Authorization": "Bearer user-key"},  # a user's key is not an admin's
            )
        assert answer.status_code == status
        assert answer.json()["error"]["code"] in ("forbidden", "invalid_api_key")


@pytest.mark.slow
def test_sighup_with_a_changed_config_swaps_the_edge_model(tmp_path: Path) -> None:
    config = tmp_path / "speculate.yaml"
    config.write_text("cloud:\n  enabled: false\nedge:\n  model: smollm2-135m\n")
    server = start_server(str(tmp_path), None, "--config", str(config))
    try:

        def edge_model() -> str:
            return str(httpx.get(f"{server.url}/readyz", timeout=10).json()["edge"]["model"])

        assert edge_model() == "smollm2-135m"
        config.write_text("cloud:\n  enabled: false\nedge:\n  model: gemma3-270m\n")
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while edge_model() != "gemma3-270m":  # another process: no event to wait on
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
    finally:
        server.stop()
    assert "SIGHUP: loading edge model gemma3-270m" in server.log()
