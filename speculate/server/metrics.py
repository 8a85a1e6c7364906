"""Prometheus metrics, one registry per app (no module globals).

Everything is read off a request's finished event log, so the numbers are exactly
what clients saw: route, outcome, timings from ``done.stats``, cloud errors by code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from speculate.core.request import SpeculateRequest
from speculate.core.summary import RunSummary

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
EDIT_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "speculate_requests", "Finished requests", ["route", "outcome"], registry=r
        )
        self.active = Gauge("speculate_active_requests", "Requests running now", registry=r)
        self.draft_first = Histogram(
            "speculate_draft_first_seconds",
            "Time to the first draft token",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cloud_first = Histogram(
            "speculate_cloud_first_seconds",
            "Time to the first cloud token",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.final = Histogram(
            "speculate_final_seconds",
            "Time to the final answer",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.edit_distance = Histogram(
            "speculate_edit_distance_chars",
            "Draft vs final edit distance",
            ["route"],
            buckets=EDIT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("speculate_tokens", "Generated tokens", ["side"], registry=r)
        self.cloud_errors = Counter(
            "speculate_cloud_errors", "Cloud failures by kind", ["code"], registry=r
        )
        self.cost = Counter("speculate_cost_usd", "Cost of the answers", registry=r)
        self.saved = Counter(
            "speculate_cost_saved_usd",
            "Saved against sending everything to the cloud",
            registry=r,
        )
        self.edge_queue = Gauge(
            "speculate_edge_queue_depth", "Requests waiting for the edge model", registry=r
        )
        self.cloud_up = Gauge(
            "speculate_cloud_up", "1 if the last cloud probe succeeded", registry=r
        )

        # Each metric's child per label values, looked up once: ``labels()`` validates
        # and locks on every call, and a finished request makes seven of them.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self.circuit_open = Gauge(
            "speculate_cloud_circuit_open",
            "1 while the cloud circuit breaker sends requests to the edge",
            registry=r,
        )
        self.queued = Counter(
            "speculate_refinements_queued", "Cloud refinements queued while offline", registry=r
        )

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def watch_edge_queue(self, depth: Callable[[], float]) -> None:
        self.edge_queue.set_function(depth)

    def watch_circuit(self, is_open: Callable[[], float]) -> None:
        self.circuit_open.set_function(is_open)

    # -- RunObserver -------------------------------------------------------------------
    def started(self, request: SpeculateRequest) -> None:
        self.active.inc()

    async def finished(self, request: SpeculateRequest, summary: RunSummary) -> None:
        if summary.queued:
            self.queued.inc()
        self.active.dec()
        route = summary.route or "unknown"
        for code in summary.cloud_errors:
            self._child(self.cloud_errors, code).inc()
        outcome: str = summary.outcome
        if summary.outcome == "done":
            outcome = f"final_{summary.final_source}"
            self._done(route, summary.stats)
        self._child(self.requests, route, outcome).inc()

    def _done(self, route: str, stats: dict[str, object]) -> None:
        def seconds(key: str) -> float | None:
            value = stats.get(key)
            return float(value) / 1000 if isinstance(value, int | float) else None

        for key, histogram in (
            ("draft_first_ms", self.draft_first),
            ("cloud_first_ms", self.cloud_first),
            ("final_ms", self.final),
        ):
            value = seconds(key)
            if value is not None:
                self._child(histogram, route).observe(value)
        self._child(self.edit_distance, route).observe(float(str(stats.get("edit_distance", 0))))
        self._child(self.tokens, "edge").inc(float(str(stats.get("draft_tokens", 0))))
        self._child(self.tokens, "cloud").inc(float(str(stats.get("cloud_tokens", 0))))
        self.cost.inc(max(0.0, float(str(stats.get("cost_usd", 0.0)))))
        saved = float(str(stats.get("cost_saved_usd", 0.0)))
        if saved > 0:
            self.saved.inc(saved)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
