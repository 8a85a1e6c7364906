"""Circuit breaker transitions, with a fixed jitter so backoffs are exact."""

from __future__ import annotations

from speculate.core.circuit import CircuitBreaker


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(threshold=3, base_s=1.0, cap_s=8.0, jitter=lambda: 1.0)
    breaker.record_failure(0.0, "cloud_unreachable")
    breaker.record_failure(0.1)
    assert breaker.state == "closed"
    assert breaker.allows_requests
    breaker.record_success(0.2)  # a success in between resets the count
    for t in (0.3, 0.4):
        breaker.record_failure(t)
    assert breaker.state == "closed"
    breaker.record_failure(0.5, "cloud_timeout")
    assert breaker.state == "open"
    assert not breaker.allows_requests
    assert breaker.next_probe_at == 1.5
    assert breaker.snapshot(1.0)["last_error"] == "cloud_timeout"


def test_half_open_probe_backs_off_exponentially_up_to_the_cap() -> None:
    breaker = CircuitBreaker(threshold=1, base_s=1.0, cap_s=5.0, jitter=lambda: 1.0)
    breaker.record_failure(0.0)
    now, waits = 0.0, []
    for _ in range(5):
        assert breaker.next_probe_at is not None
        assert not breaker.probe_due(breaker.next_probe_at - 0.01)
        waits.append(breaker.next_probe_at - now)
        now = breaker.next_probe_at
        assert breaker.probe_due(now)
        breaker.begin_probe(now)
        assert breaker.state == "half_open"
        assert not breaker.allows_requests
        breaker.record_failure(now)
        assert breaker.state == "open"
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    breaker.begin_probe(now + 5)
    breaker.record_success(now + 5)
    assert breaker.state == "closed"
    assert breaker.failed_probes == 0
    assert breaker.snapshot(now + 6)["next_probe_in_s"] is None


def test_full_jitter_draws_below_the_ceiling() -> None:
    draws = iter([0.0, 0.5, 0.25])
    breaker = CircuitBreaker(threshold=1, base_s=2.0, cap_s=30.0, jitter=lambda: next(draws))
    breaker.record_failure(10.0)
    assert breaker.next_probe_at == 10.0  # jitter 0: probe at once
    breaker.begin_probe(10.0)
    breaker.record_failure(10.0)
    assert breaker.next_probe_at == 10.0 + 0.5 * 4.0
