"""Connection-level defences under uvicorn: a deadline for request headers and a cap on
open connections.

Slowloris: a client that opens connections and sends its request headers a byte at a
time holds a descriptor each, for as long as it likes (uvicorn has no header deadline);
a thousand of them exhaust the process's descriptors and every request fails.  So:

- a connection whose request headers are not complete ``header_timeout_s`` after it
  opened (or after its previous response, on a kept-alive connection) is closed, like
  nginx's ``client_header_timeout``;
- past ``max_connections`` open connections (never more than the descriptor limit
  allows), the oldest connection still waiting for its headers is closed to make room,
  so a real request (``/healthz`` included) still gets in; when every connection is busy
  with a request, the newcomer is the one closed.  Both are logged, at most every few
  seconds, with counts.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

log = logging.getLogger("speculate.server")

DESCRIPTOR_RESERVE = 64  # for the models, the database, logs and the stand-in's pipes
LOG_EVERY_S = 5.0


def descriptor_room(wanted: int) -> int:
    """``wanted``, lowered to what the process's descriptor limit leaves room for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - DESCRIPTOR_RESERVE))


class ConnectionGuard:
    """Shared by every HTTP connection of one server."""

    def __init__(self, header_timeout_s: float, max_connections: int) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = descriptor_room(max_connections)
        self._waiting: dict[Any, None] = {}  # HTTP connections by age (dicts keep order)
        self.evicted = 0
        self.timed_out = 0
        self._logged: dict[str, float] = {}

    def _note(self, what: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._logged.get(what, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[what] = now
            log.warning(message, *args)

    def opened(self, connection: Any, open_now: int) -> None:
        self._waiting[connection] = None
        if open_now <= self.max_connections:
            return
        victim = next((c for c in list(self._waiting) if c.awaiting_headers()), connection)
        self.evicted += 1
        self._note(
            "cap",
            "connection cap %d reached: closing the oldest connection still sending its "
            "request headers (%d closed so far)",
            self.max_connections,
            self.evicted,
        )
        victim.transport.close()

    def closed(self, connection: Any) -> None:
        self._waiting.pop(connection, None)

    def headers_late(self, connection: Any) -> None:
        self.timed_out += 1
        self._note(
            "timeout",
            "closing connections that did not finish their request headers within %g s (%d so far)",
            self.header_timeout_s,
            self.timed_out,
        )
        connection.transport.close()


def guarded(base: type[asyncio.Protocol], guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class ``base`` with the guard's deadline and cap."""

    class Guarded(base):  # type: ignore[valid-type,misc]
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm()
            guard.opened(self, len(self.connections))

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            guard.closed(self)
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # a kept-alive connection owes the next request's headers in time

        def awaiting_headers(self) -> bool:
            if self.transport.get_protocol() is not self:  # upgraded to a WebSocket
                guard.closed(self)
                return False
            return self.cycle is None or bool(self.cycle.response_complete)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(guard.header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing() and self.awaiting_headers():
                guard.headers_late(self)

    Guarded.__name__ = f"Guarded{base.__name__}"
    return Guarded
