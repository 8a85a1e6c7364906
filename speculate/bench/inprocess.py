"""Run the app under uvicorn in a background thread (benchmarks and soak)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette

from speculate.backends.standin import free_port
from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.server.run import uvicorn_config
from speculate.settings import Settings


def quiet_settings() -> Settings:
    """No rate limit, no per-client stream cap, no request log: load generators (all on
    one address), not users."""
    return Settings(
        server={"rate_per_minute": 0, "resume_grace_s": 30, "max_streams_per_client": 0},
        store={"request_log": False, "queue": False, "cache": False},
    )


@contextmanager
def serve_app(app: Starlette, settings: Settings) -> Iterator[str]:
    """Run ``app`` under uvicorn, configured as ``speculate serve`` does, on a free
    loopback port in a background thread; yield its URL."""
    port = free_port()
    config = uvicorn_config(app, settings, port=port)
    config.access_log = False
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # uvicorn offers no cross-thread start event: poll, bounded
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the in-process server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def serving(backends: Backends, settings: Settings | None = None) -> Iterator[str]:
    settings = settings or quiet_settings()
    with serve_app(create_app(settings, backends), settings) as url:
        yield url
