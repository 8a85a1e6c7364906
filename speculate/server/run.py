"""How the server runs under uvicorn: one place for the transport settings.

The WebSocket implementation is the ``websockets`` library (sans-I/O flavour),
permessage-deflate is off (compression of attacker-influenced text next to secrets
invites CRIME-style attacks, and costs CPU per frame), frames are capped at
``server.ws_max_message_bytes`` (larger ones close the socket with 1009), connections get
a deadline for their request headers and a cap (:mod:`speculate.server.connections`), and
a SIGTERM first drains running streams, and once started the process is settled for
serving: its heap (:func:`settle_heap`) and its threads' turns on the GIL
(:func:`hand_over_the_gil_sooner`).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import socket
import sys
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from speculate.server.connections import ConnectionGuard, guarded
from speculate.settings import Settings


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _http_protocol() -> type[asyncio.Protocol]:
    if _installed("httptools"):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol


def uvicorn_config(
    app: Starlette, settings: Settings, *, port: int | None = None
) -> uvicorn.Config:
    server = settings.server
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port if port is None else port,
        # uvicorn[standard] brings both where they build; elsewhere the defaults serve.
        loop="uvloop" if _installed("uvloop") else "asyncio",
        http=guarded(
            _http_protocol(), ConnectionGuard(server.header_timeout_s, server.max_connections)
        ),
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=server.ws_max_message_bytes,
        log_level="info",
        log_config=None,  # keep our handlers (JSON lines when configured)
        timeout_graceful_shutdown=int(server.shutdown_grace_s) + 5,
    )


YOUNG_COLLECTION_EVERY = 50_000  # allocations; CPython's default is 700
# Young collections before a middle one; CPython's default is 10.  A middle collection
# walks every object that survived the young ones since (all live streams' state).
MIDDLE_COLLECTION_EVERY = 20


def settle_heap() -> None:
    """Once the server has started: what start-up built (modules, the app, the models)
    lives as long as the process, so it moves out of the collector's way
    (``gc.freeze``), young collections run every 50,000 allocations, not 700, and
    middle ones every 20 young ones, not 10.

    A stream allocates on every event; with CPython's defaults the collector took an
    eighth of the server's CPU under load, and each full collection walked every
    start-up object while all streams waited (73 ms each at 500 streams).  With 10,000
    and 10 it still took 7.8% of the app's CPU at 500 streams of 40 tokens, half of it
    in middle collections of ~35 ms each; with these 5.5%, and one middle collection
    (``python -m speculate.bench.inapp --streams 500 --tokens 40 --tps 10 --gc``, and
    ``--gc 10000,10`` for the old thresholds)."""
    gc.collect()  # start-up's garbage is freed, not frozen
    gc.freeze()
    oldest = gc.get_threshold()[2]
    gc.set_threshold(YOUNG_COLLECTION_EVERY, MIDDLE_COLLECTION_EVERY, oldest)


GIL_SWITCH_INTERVAL_S = 0.0002  # CPython's default is 0.005


def hand_over_the_gil_sooner() -> None:
    """Once the server has started: a thread waiting for the GIL gets it after 0.2 ms
    of another thread's Python, not 5 ms.

    The edge model decodes on a thread that runs llama-cpp-python's own Python between
    tokens; a token it hands to the event loop waits for that Python to reach the next
    call into llama.cpp, up to the switch interval, and the decoding thread waits as long
    behind the loop's Python when a request starts (``python -m speculate.bench.inapp
    --primitives``: a thread started while the loop runs 2 ms of Python began after
    ~2.08 ms with CPython's interval, ~0.4 ms with this one, on a 2-core machine).
    Switching more often costs only when two threads both run Python, a few
    microseconds per switch."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


class DrainingServer(uvicorn.Server):
    """On SIGTERM / SIGINT, let running streams finish (or end them with a final
    ``server_shutdown`` error) while uvicorn stops accepting connections."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            settle_heap()
            hand_over_the_gil_sooner()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.app
        begin_shutdown = getattr(getattr(app, "state", None), "begin_shutdown", None)
        if begin_shutdown is not None:
            begin_shutdown()
        super().handle_exit(sig, frame)
