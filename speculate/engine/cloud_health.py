"""Live cloud health: the circuit breaker fed by real requests and by a prober.

Requests report how their cloud call ended; transient failures count toward opening
the circuit.  While the circuit is open, a prober sends one ``GET /models`` when the
breaker's jittered backoff says so (half-open); its success closes the circuit and
wakes whoever waits for the cloud (the offline queue).  While closed, the prober
measures the round-trip time every ``probe_interval_s``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio

from speculate.backends.base import CloudBackend
from speculate.core.circuit import CircuitBreaker
from speculate.errors import SpeculateError
from speculate.policy.router import CloudHealth as RouterView
from speculate.settings import CloudSettings

log = logging.getLogger("speculate.cloud")

AWAY = {"ConnectError", "ConnectTimeout"}  # probe errors that mean the cloud is unreachable


class CloudHealth:
    def __init__(self, cloud: CloudBackend | None, settings: CloudSettings) -> None:
        self.cloud = cloud
        self.probe_interval_s = settings.probe_interval_s
        self.breaker = CircuitBreaker(
            threshold=settings.circuit_failures,
            base_s=settings.circuit_probe_base_s,
            cap_s=settings.circuit_probe_cap_s,
        )
        self.rtt_ms: float | None = None
        self.last_probe: dict[str, Any] = {}
        self._changed = anyio.Event()

    @property
    def view(self) -> RouterView:
        if self.cloud is None:
            return "none"
        return "up" if self.breaker.allows_requests else "open"

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def succeeded(self) -> None:
        was_open = not self.breaker.allows_requests
        self.breaker.record_success(time.monotonic())
        if was_open:
            log.info("cloud circuit closed: the cloud is back")
            self._notify()

    def failed(self, error: SpeculateError) -> None:
        """Count a request's cloud failure (only transient ones say the cloud is away)."""
        if error.transient:
            self._record_failure(error.code)

    def _record_failure(self, what: str) -> None:
        was_closed = self.breaker.allows_requests
        self.breaker.record_failure(time.monotonic(), what)
        if was_closed and not self.breaker.allows_requests:
            log.warning(
                "cloud circuit open after %d failures (%s): requests go to the edge",
                self.breaker.threshold,
                what,
            )
            self._notify()

    async def wait_until_up(self, timeout_s: float) -> bool:
        """Wait (bounded) until the circuit is closed; True if it is."""
        with anyio.move_on_after(timeout_s):
            while not self.breaker.allows_requests:
                await self._changed.wait()
        return self.breaker.allows_requests

    async def probe(self) -> dict[str, Any]:
        assert self.cloud is not None
        result = await self.cloud.probe()
        self.last_probe = result
        if result.get("state") == "up":
            self.rtt_ms = result.get("rtt_ms")
            self.succeeded()
        elif result.get("error") in AWAY or result.get("status", 0) >= 500:
            # Only "nobody there" counts: a busy cloud that answers /models slowly is
            # still up, and its real requests report their own failures.
            self._record_failure(f"probe: {result.get('error') or result.get('status')}")
        return result

    async def run(self) -> None:
        """The prober (for the app's lifespan task group)."""
        if self.cloud is None:
            return
        while True:
            now = time.monotonic()
            if self.breaker.state == "closed":
                with anyio.move_on_after(self.probe_interval_s):
                    await self._changed.wait()  # or a state change
                if self.breaker.state == "closed":
                    await self.probe()
            elif self.breaker.probe_due(now):
                self.breaker.begin_probe(now)
                await self.probe()
            else:
                assert self.breaker.next_probe_at is not None  # set whenever it opens
                with anyio.move_on_after(self.breaker.next_probe_at - now):
                    await self._changed.wait()

    def snapshot(self) -> dict[str, Any]:
        return {**self.breaker.snapshot(time.monotonic()), "rtt_ms": self.rtt_ms}
