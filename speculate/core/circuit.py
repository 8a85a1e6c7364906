"""A circuit breaker for the cloud, as a pure state machine (the caller passes ``now``).

``closed``: requests use the cloud; ``threshold`` consecutive connectivity failures
open it.  ``open``: requests go to the edge at once instead of waiting for timeouts;
a probe is due after a backoff drawn with full jitter from ``[0, min(cap, base * 2^k)]``
(k = probes that failed since it opened).  ``half_open``: one probe is in flight; its
success closes the circuit, its failure re-opens it with the next backoff.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal

CircuitState = Literal["closed", "open", "half_open"]


def full_jitter(
    attempt: int, base: float, cap: float, draw: Callable[[], float] = random.random
) -> float:
    """A backoff drawn uniformly from ``[0, min(cap, base * 2^attempt)]`` ("full jitter":
    clients that failed together do not retry together). ``web/transport.js`` has the
    browser's ``fullJitter``."""
    return float(draw()) * min(cap, base * 2.0 ** min(attempt, 30))


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 3,
        base_s: float = 1.0,
        cap_s: float = 30.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.threshold = threshold
        self.base_s = base_s
        self.cap_s = cap_s
        self._jitter = jitter
        self.state: CircuitState = "closed"
        self.failures = 0  # consecutive, while closed
        self.failed_probes = 0
        self.opened_at: float | None = None
        self.next_probe_at: float | None = None
        self.last_error: str | None = None

    @property
    def allows_requests(self) -> bool:
        return self.state == "closed"

    def record_success(self, now: float) -> None:
        self.state = "closed"
        self.failures = self.failed_probes = 0
        self.opened_at = self.next_probe_at = None
        self.last_error = None

    def record_failure(self, now: float, error: str = "") -> None:
        self.last_error = error or self.last_error
        if self.state == "closed":
            self.failures += 1
            if self.failures >= self.threshold:
                self._open(now)
        elif self.state == "half_open":
            self.failed_probes += 1
            self._open(now)

    def probe_due(self, now: float) -> bool:
        return self.state == "open" and self.next_probe_at is not None and now >= self.next_probe_at

    def begin_probe(self, now: float) -> None:
        """A probe is about to be sent (only one at a time)."""
        if self.state == "open":
            self.state = "half_open"

    def backoff_s(self) -> float:
        return full_jitter(self.failed_probes, self.base_s, self.cap_s, self._jitter)

    def _open(self, now: float) -> None:
        self.state = "open"
        if self.opened_at is None:
            self.opened_at = now
        self.next_probe_at = now + self.backoff_s()

    def snapshot(self, now: float) -> dict[str, Any]:
        due = None if self.next_probe_at is None else max(0.0, self.next_probe_at - now)
        return {
            "circuit": self.state,
            "consecutive_failures": self.failures,
            "failed_probes": self.failed_probes,
            "open_for_s": None if self.opened_at is None else round(now - self.opened_at, 3),
            "next_probe_in_s": None if due is None else round(due, 3),
            "last_error": self.last_error,
        }
