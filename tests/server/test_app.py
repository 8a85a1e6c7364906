"""The application factory's own duties while the app runs."""

from __future__ import annotations

import sniffio

from speculate.bench.fake import FakeBackend
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
