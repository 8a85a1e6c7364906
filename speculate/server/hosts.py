"""Who may address this server: a ``Host`` allowlist and an exact ``Origin`` check (a pure
ASGI middleware, outermost, so nothing runs for a request it refuses).

DNS rebinding: a page on ``evil.example`` re-points its own name at 127.0.0.1 and then
talks to the local server as a same-origin page, with ``Host: evil.example``.  So every
HTTP request and WebSocket handshake must name the server by a name it answers to: an IP
address (an address cannot be rebound), ``localhost`` (and ``*.localhost``), the bound
host, this machine's own name, or one of ``server.allowed_hosts`` (``"*"``: any, for a
server behind a proxy that checks).  Anything else gets 403 before any work.

Cross-site requests: a foreign page may still send a POST to 127.0.0.1 (a "simple"
request needs no CORS preflight) and spend the cloud key; a request that changes state
and carries an ``Origin`` other than the server's own or an allowed one gets 403 too.
"""

from __future__ import annotations

import ipaddress
import socket

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from speculate.errors import Forbidden
from speculate.server.errors import error_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(header: str) -> str:
    """The name in a ``Host`` header: the port and a trailing dot removed, lower case."""
    if header.startswith("["):  # [::1]:8000
        return header[1 : header.find("]")].lower()
    name, _, port = header.rpartition(":")
    if not name or not port.isdigit():
        name = header
    return name.rstrip(".").lower()


class HostGuard:
    def __init__(
        self, app: ASGIApp, *, bound_host: str, allowed_hosts: list[str], origins: list[str]
    ) -> None:
        self.app = app
        machine = socket.gethostname().lower()
        self.names = {"localhost", bound_host.lower(), machine, f"{machine}.local"}
        self.names |= {h.lower() for h in allowed_hosts}
        self.any_host = "*" in allowed_hosts
        self.origins = set(origins)

    def host_allowed(self, header: str | None) -> bool:
        if header is None or self.any_host:  # no Host: not a browser, nothing to rebind
            return True
        name = host_name(header)
        if name in self.names or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def origin_allowed(self, headers: Headers, scheme: str) -> bool:
        origin = headers.get("origin")
        if origin is None or origin in self.origins:
            return True
        host = headers.get("host", "")
        return origin == f"{scheme}://{host}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        problem = None
        if not self.host_allowed(headers.get("host")):
            problem = "this server does not answer to that Host; add it to server.allowed_hosts"
        elif scope["type"] == "websocket" or scope.get("method") not in SAFE_METHODS:
            scheme = str(scope.get("scheme", "http"))
            scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
            if not self.origin_allowed(headers, scheme):
                problem = "requests from that Origin are not allowed"
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": problem})
        else:
            await error_response(Forbidden(problem), scope["path"])(scope, receive, send)
