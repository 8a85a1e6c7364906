"""The application factory's own duties while the app runs."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
import sniffio

from speculate.bench.fake import FakeBackend
from speculate.bench.inapp import post
from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.settings import Settings


async def test_the_app_names_its_event_loop_library_while_it_runs_and_only_then() -> None:
    # anyio asks sniffio on every task group, event and sleep; named, it need not sniff.
    settings = Settings(store={"request_log": False})
    app = create_app(settings, Backends(edge=FakeBackend("fake-edge")))
    before = sniffio.thread_local.name
    async with app.router.lifespan_context(app):
        assert sniffio.thread_local.name == "asyncio"
        assert sniffio.current_async_library() == "asyncio"
    assert sniffio.thread_local.name == before


class _OrderedFake(FakeBackend):
    """A fake model that notes when a request reaches it."""

    def __init__(self, order: list[str]) -> None:
        super().__init__("fake-edge", tokens_per_s=1000)
        self.order = order

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        self.order.append("model")
        return super().stream(*args, **kwargs)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/speculate", {"mode": "edge"}),
        ("/v1/chat/completions", {"model": "speculate-edge", "stream": True}),
    ],
)
async def test_a_streamed_request_reaches_its_model_before_the_headers_are_written(
    path: str, body: dict[str, Any]
) -> None:
    # The headers' write would otherwise sit between the request and its first token.
    order: list[str] = []
    settings = Settings(store={"request_log": False, "queue": False, "cache": False})
    app = create_app(settings, Backends(edge=_OrderedFake(order)))
    payload = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **body}
    ).encode()

    def seen(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            order.append(f"headers {message['status']}")

    async with app.router.lifespan_context(app):
        with anyio.fail_after(10):
            await post(app, path, payload, seen)
    assert order == ["model", "headers 200"]
