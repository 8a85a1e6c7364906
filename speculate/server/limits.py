"""Admission: a per-client rate limit and the cap on concurrent streams.

The rate limit is a token bucket per client address: ``rate_per_minute`` requests
on average with bursts of ``burst``; beyond it, HTTP 429 with ``Retry-After`` (or a
WebSocket close 1008).  Past ``max_concurrent_streams`` new requests get 503 with
``Retry-After`` (WebSocket: close 1013, "try again later") so running ones keep
their pace.
"""

from __future__ import annotations

import math

from starlette.responses import JSONResponse

from speculate.server.state import AppState


def refuse(status: int, code: str, message: str, retry_after_s: float) -> JSONResponse:
    kind = "rate_limit_error" if status == 429 else "server_error"  # OpenAI's names
    return JSONResponse(
        {"error": {"code": code, "message": message, "type": kind, "param": None}},
        status_code=status,
        headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))},
    )


def admit(state: AppState, client: str) -> JSONResponse | None:
    """None if a new request from ``client`` may start, else the refusal to send."""
    wait = state.rate_limiter.check(client)
    if wait:
        return refuse(429, "rate_limited", "too many requests from this client", wait)
    if state.jobs.draining:
        return refuse(503, "shutting_down", "the server is shutting down", 5)
    if state.jobs.full:
        limit = state.settings.server.max_concurrent_streams
        return refuse(503, "overloaded", f"{limit} streams are running; try again shortly", 1)
    return None
