"""Admission: a per-client rate limit and the cap on concurrent streams.

The rate limit is a token bucket per client address: ``rate_per_minute`` requests
on average with bursts of ``burst``; beyond it, HTTP 429 with ``Retry-After`` (or a
WebSocket close 1008).  Past ``max_concurrent_streams`` new requests get 503 with
``Retry-After`` (WebSocket: close 1013, "try again later") so running ones keep
their pace.
"""

from __future__ import annotations

from speculate.errors import RateLimited, ShuttingDown, Unavailable
from speculate.server.state import AppState


def admit(state: AppState, client: str) -> None:
    """Raise the refusal if a new request from ``client`` may not start now."""
    wait = state.rate_limiter.check(client)
    if wait:
        raise RateLimited("too many requests from this client", retry_after_s=wait)
    if state.jobs.draining:
        raise ShuttingDown("the server is shutting down", retry_after_s=5)
    if state.jobs.full:
        limit = state.settings.server.max_concurrent_streams
        raise Unavailable(f"{limit} streams are running; try again shortly", retry_after_s=1)
