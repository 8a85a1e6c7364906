"""The short soak: clients that drop, resume and cancel lose and repeat nothing."""

from __future__ import annotations

from speculate.bench.soak import run_soak


def test_short_soak_loses_nothing() -> None:
    result = run_soak(clients=12, requests=8, minutes=1.0, quiet=True)
    assert result.requests >= 90
    assert result.disconnects > 10  # the random drops really happened
    assert result.cancelled > 0
    assert result.lost_events == 0
    assert result.duplicate_events == 0
    assert result.mismatched_texts == 0
    assert result.errors == 0
    assert result.completed + result.cancelled == result.requests
