"""What a finished request came to, read off its events (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from speculate.core.protocol import Done, Draft, Error, Event, Queued, Start


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a finished request came to, read once off its events for every observer
    (metrics, the request log, the log line)."""

    request_id: str
    route: str | None = None
    outcome: Literal["done", "error", "cancelled"] = "cancelled"
    final_source: str | None = None
    error_code: str | None = None
    cloud_errors: tuple[str, ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)
    queued: bool = False  # its refinement waits in the offline queue
    edge_model: str | None = None
    cloud_model: str | None = None
    draft: str = ""  # everything the edge drafted, in order
    text: str | None = None  # the final text (done.text)


def summarize(request_id: str, events: list[Event]) -> RunSummary:
    route = final_source = error_code = None
    outcome: Literal["done", "error", "cancelled"] = "cancelled"  # no end: it was cut off
    cloud_errors: list[str] = []
    stats: dict[str, Any] = {}
    queued = False
    edge_model = cloud_model = text = None
    drafted: list[str] = []
    for event in events:
        if isinstance(event, Draft):  # most of them: asked first
            drafted.append(event.text)
        elif isinstance(event, Queued):
            queued = True
        elif isinstance(event, Start):
            route, edge_model, cloud_model = event.route, event.edge_model, event.cloud_model
        elif isinstance(event, Error):
            if event.source == "cloud":
                cloud_errors.append(event.code)
            if event.fatal:
                outcome = "cancelled" if event.code == "cancelled" else "error"
                error_code = event.code
        elif isinstance(event, Done):
            outcome, final_source, stats = "done", event.final_source, event.stats
            text = event.text
    return RunSummary(
        request_id,
        route,
        outcome,
        final_source,
        error_code,
        tuple(cloud_errors),
        stats,
        queued,
        edge_model,
        cloud_model,
        "".join(drafted),
        text,
    )
