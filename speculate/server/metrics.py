"""Prometheus metrics, one registry per app (no module globals).

Everything is read off a request's finished event log, so the numbers are exactly
what clients saw: route, outcome, timings from ``done.stats``, cloud errors by code.

A finished request updates about ten series.  prometheus-client's own metric objects
take a lock and validate on every update, a few microseconds each, at the very moment
hundreds of streams may end together; so the per-request series are plain tallies here
(:class:`_Tally`, :class:`_Histogram`) that the registry reads only when it is scraped.
The gauges that read a function stay prometheus-client's.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from speculate.core.request import SpeculateRequest
from speculate.core.summary import RunSummary

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
EDIT_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class _Tally:
    """A counter's values by label values (no labels: the key ``()``)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def inc(self, key: tuple[str, ...] = (), amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in self.values.items():
            family.add_metric(list(key), value)
        return family


class _Histogram:
    """A histogram's bucket counts and sum by label values."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.bounds = [float(b) for b in buckets] + [math.inf]
        self.counts: dict[tuple[str, ...], list[int]] = {}  # per bucket, not cumulative
        self.sums: dict[tuple[str, ...], float] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0] * len(self.bounds)
        counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bucket with le >= value
        self.sums[key] = self.sums.get(key, 0.0) + value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, counts in self.counts.items():
            cumulative = itertools.accumulate(counts)
            buckets = [
                ("+Inf" if bound == math.inf else repr(bound), count)
                for bound, count in zip(self.bounds, cumulative, strict=True)
            ]
            family.add_metric(list(key), buckets, self.sums[key])
        return family


class _Tallies(Collector):
    """The per-request series, read by the registry when it is scraped."""

    def __init__(self) -> None:
        self.active = 0
        self.requests = _Tally("speculate_requests", "Finished requests", ["route", "outcome"])
        self.draft_first = _Histogram(
            "speculate_draft_first_seconds",
            "Time to the first draft token",
            ["route"],
            LATENCY_BUCKETS,
        )
        self.cloud_first = _Histogram(
            "speculate_cloud_first_seconds",
            "Time to the first cloud token",
            ["route"],
            LATENCY_BUCKETS,
        )
        self.final = _Histogram(
            "speculate_final_seconds", "Time to the final answer", ["route"], LATENCY_BUCKETS
        )
        self.edit_distance = _Histogram(
            "speculate_edit_distance_chars", "Draft vs final edit distance", ["route"], EDIT_BUCKETS
        )
        self.tokens = _Tally("speculate_tokens", "Generated tokens", ["side"])
        self.cloud_errors = _Tally("speculate_cloud_errors", "Cloud failures by kind", ["code"])
        self.cost = _Tally("speculate_cost_usd", "Cost of the answers")
        self.saved = _Tally(
            "speculate_cost_saved_usd", "Saved against sending everything to the cloud"
        )
        self.queued = _Tally(
            "speculate_refinements_queued", "Cloud refinements queued while offline"
        )

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "speculate_active_requests", "Requests running now", value=self.active
        )
        for tally in (
            self.requests,
            self.draft_first,
            self.cloud_first,
            self.final,
            self.edit_distance,
            self.tokens,
            self.cloud_errors,
            self.cost,
            self.saved,
            self.queued,
        ):
            yield tally.family()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tallies = _Tallies()
        r.register(self.tallies)
        self.edge_queue = Gauge(
            "speculate_edge_queue_depth", "Requests waiting for the edge model", registry=r
        )
        self.cloud_up = Gauge(
            "speculate_cloud_up", "1 if the last cloud probe succeeded", registry=r
        )
        self.circuit_open = Gauge(
            "speculate_cloud_circuit_open",
            "1 while the cloud circuit breaker sends requests to the edge",
            registry=r,
        )

    def watch_edge_queue(self, depth: Callable[[], float]) -> None:
        self.edge_queue.set_function(depth)

    def watch_circuit(self, is_open: Callable[[], float]) -> None:
        self.circuit_open.set_function(is_open)

    # -- RunObserver -------------------------------------------------------------------
    def started(self, request: SpeculateRequest) -> None:
        self.tallies.active += 1

    async def finished(self, request: SpeculateRequest, summary: RunSummary) -> None:
        tallies = self.tallies
        if summary.queued:
            tallies.queued.inc()
        tallies.active -= 1
        route = summary.route or "unknown"
        for code in summary.cloud_errors:
            tallies.cloud_errors.inc((code,))
        outcome: str = summary.outcome
        if summary.outcome == "done":
            outcome = f"final_{summary.final_source}"
            self._done((route,), summary.stats)
        tallies.requests.inc((route, outcome))

    def _done(self, route: tuple[str], stats: dict[str, object]) -> None:
        tallies = self.tallies
        for key, histogram in (
            ("draft_first_ms", tallies.draft_first),
            ("cloud_first_ms", tallies.cloud_first),
            ("final_ms", tallies.final),
        ):
            value = stats.get(key)
            if isinstance(value, int | float):
                histogram.observe(route, float(value) / 1000)
        tallies.edit_distance.observe(route, float(str(stats.get("edit_distance", 0))))
        tallies.tokens.inc(("edge",), float(str(stats.get("draft_tokens", 0))))
        tallies.tokens.inc(("cloud",), float(str(stats.get("cloud_tokens", 0))))
        tallies.cost.inc((), max(0.0, float(str(stats.get("cost_usd", 0.0)))))
        saved = float(str(stats.get("cost_saved_usd", 0.0)))
        if saved > 0:
            tallies.saved.inc((), saved)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
