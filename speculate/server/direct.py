"""A stream's frames go straight to the server, past the middlewares.

Every middleware of the app (Starlette's two error layers, the security headers, CORS,
the host guard, the API keys) acts on a request and on its response's *start* only;
each still wraps ``send``, so each frame of a stream paid a wrapper call per layer, a
tenth of the calls of a streamed event.  The app keeps the server's own ``send`` in the
scope, and a streaming response sends its start through the chain and its frames to
this one.  A middleware that must see bodies (compression, say) would end that: it
would have to go in front of the app instead.
"""

from __future__ import annotations

from starlette.types import Scope, Send

DIRECT_SEND = "speculate.direct_send"


def direct_send(scope: Scope, fallback: Send) -> Send:
    """The server's own ``send`` for this connection's frames (``fallback`` if the app
    was entered some other way)."""
    send: Send = scope.get(DIRECT_SEND, fallback)
    return send
