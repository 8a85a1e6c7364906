"""Admission: a per-client rate limit, a per-client cap on concurrent streams and the
server's cap on concurrent streams.

Every stream counts, whatever carries it (SSE, detached, the OpenAI routes, each
``speculate`` message on a WebSocket).  The rate limit is a token bucket per client
address: ``rate_per_minute`` requests on average with bursts of ``burst``; beyond it,
HTTP 429 ``rate_limited`` with ``Retry-After`` (on a WebSocket, that request's stream is
one fatal error).  A client with ``max_streams_per_client`` streams running gets 429
``too_many_streams`` for the next.  Past ``max_concurrent_streams`` new requests get 503
with ``Retry-After`` (WebSocket: close 1013, "try again later") so running ones keep
their pace.
"""

from __future__ import annotations

import anyio

from speculate.core.request import SpeculateRequest
from speculate.errors import RateLimited, ShuttingDown, Unavailable
from speculate.server.state import AppState

# Longer conversations are counted on a worker thread: rendering and tokenizing tens of
# kilobytes takes milliseconds that the event loop owes to other streams.
INLINE_FIT_CHARS = 4000
INLINE_FIT_MESSAGES = 64


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
    per_client = state.settings.server.max_streams_per_client
    if per_client and state.jobs.running_for(client) >= per_client:
        raise RateLimited(
            f"this client has {per_client} streams running; wait for one to end",
            code="too_many_streams",
            retry_after_s=1,
        )


async def fit_to_windows(state: AppState, job: SpeculateRequest) -> SpeculateRequest:
    """The request fitted to each model's window, or the 400 ``context_too_long``."""
    chars = sum(len(m.get("content", "")) for m in job.messages)
    if chars <= INLINE_FIT_CHARS and len(job.messages) <= INLINE_FIT_MESSAGES:
        return state.orchestrator.fit(job)
    return await anyio.to_thread.run_sync(state.orchestrator.fit, job)
