"""Optional API keys on every ``/v1`` route and the WebSocket (a pure ASGI middleware).

Keys come from ``server.api_keys`` (or ``SPECULATE_SERVER__API_KEYS='["k1","k2"]'``).
A client sends ``Authorization: Bearer <key>``; a browser WebSocket, which cannot set
headers, offers the subprotocol ``speculate.bearer.<the key, base64url>`` (the browser
UI does; a key in a subprotocol stays out of access logs) or passes ``?api_key=<key>``.
Every configured key is compared in constant time, so timing reveals neither the key
nor which key matched.
"""

from __future__ import annotations

import base64
import hmac
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from speculate.errors import Unauthorized
from speculate.server.errors import error_response

UNAUTHORIZED = "Missing or invalid API key: send 'Authorization: Bearer <key>'."


BEARER_PROTOCOL = "speculate.bearer."


def _unbase64url(text: str) -> str:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""  # not a key: refused like any wrong one


def key_matches(candidate: str, keys: list[str]) -> bool:
    matched = False
    for key in keys:  # no early exit: the same work whichever key (if any) matches
        matched |= hmac.compare_digest(candidate.encode(), key.encode())
    return matched


class ApiKeys:
    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [k for k in keys if k]

    def _presented(self, scope: Scope) -> str:
        authorization = Headers(scope=scope).get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token:
            return token.strip()
        if scope["type"] == "websocket":
            for offered in scope.get("subprotocols") or []:
                if offered.startswith(BEARER_PROTOCOL):
                    return _unbase64url(offered.removeprefix(BEARER_PROTOCOL))
            query = parse_qs(scope.get("query_string", b"").decode())
            return str(query.get("api_key", [""])[0])
        return ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        protected = scope["type"] in ("http", "websocket") and scope["path"].startswith("/v1")
        if not self.keys or not protected or key_matches(self._presented(scope), self.keys):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
            return
        # Before routing, so no exception handler runs yet: the same response by hand.
        await error_response(Unauthorized(UNAUTHORIZED), scope["path"])(scope, receive, send)
