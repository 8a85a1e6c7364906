"""A queued request's stream: provisional done, then the refinement with the next seq."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speculate.core.protocol import Commit, Done, Error, Queued
from speculate.core.refine import abandoned, refined
from speculate.core.session import Session
from speculate.core.text import InvariantViolation, ShownText
from speculate.errors import CloudHTTPError, CloudUnreachable


def queued_session(draft: str, *, route: str = "speculative") -> list:  # type: ignore[type-arg]
    session = Session(
        "r",
        route=route,
        reason="test",
        edge_model="e",
        cloud_model="c",  # type: ignore[arg-type]
        queue_on_cloud_failure=True,
    )
    events = session.start()
    events += session.receive_draft(draft, 0.0)
    events += session.cloud_failed(CloudUnreachable("away"), 0.1)
    events += session.edge_finished(0.2)
    return events


def test_a_transient_cloud_failure_queues_and_commits_nothing() -> None:
    events = queued_session("A draft answer.")
    assert [e.type for e in events] == ["start", "draft", "error", "queued", "done"]
    shown = ShownText()
    for event in events:
        shown.apply(event)
    assert shown.provisional is not None
    assert shown.done is None
    assert shown.committed == 0
    assert not any(isinstance(e, Commit) for e in events)


def test_a_permanent_cloud_failure_is_not_queued() -> None:
    session = Session(
        "r",
        route="speculative",
        reason="t",
        edge_model="e",
        cloud_model="c",
        queue_on_cloud_failure=True,
    )
    events = session.start() + session.receive_draft("Draft.", 0.0)
    events += session.cloud_failed(CloudHTTPError("bad request", 400), 0.1)
    events += session.edge_finished(0.2)
    assert [e.type for e in events] == ["start", "draft", "error", "commit", "done"]


def test_a_cloud_only_request_falls_back_to_the_edge() -> None:
    session = Session(
        "r", route="cloud", reason="t", edge_model="e", cloud_model="c", queue_on_cloud_failure=True
    )
    events = session.start()
    assert session.edge == "off"
    events += session.cloud_failed(CloudUnreachable("away"), 0.1)
    assert session.edge == "running"  # the caller starts the edge now
    events += session.receive_draft("Edge text.", 0.2) + session.edge_finished(0.3)
    assert [e.type for e in events][-2:] == ["queued", "done"]
    assert events[-1].stats["fallback"] == "edge"


@given(st.text(min_size=1, max_size=60), st.text(max_size=60))
def test_refined_continues_the_same_stream(draft: str, cloud: str) -> None:
    events = queued_session(draft)
    late = refined(events, cloud, {"cloud_tokens": 7})
    shown = ShownText()
    for event in events + late:
        shown.apply(event)  # seq without gaps, invariants hold
    assert shown.done is not None
    assert (shown.text, shown.done.final_source) == (cloud, "cloud")
    assert shown.done.stats["refined"] is True
    assert shown.done.stats["cloud_tokens"] == 7
    assert shown.committed == len(cloud)


def test_abandoned_keeps_the_draft() -> None:
    events = queued_session("Draft stays.")
    late = abandoned(events, "cloud_http_error", "gave up")
    shown = ShownText()
    for event in events + late:
        shown.apply(event)
    assert isinstance(late[0], Error)
    assert not late[0].fatal
    assert shown.done is not None
    assert (shown.text, shown.done.final_source) == ("Draft stays.", "edge")


def test_only_a_queued_stream_can_be_refined() -> None:
    session = Session("r", route="edge", reason="t", edge_model="e", cloud_model=None)
    events = session.start() + session.receive_draft("x", 0) + session.edge_finished(0.1)
    with pytest.raises(InvariantViolation):
        refined(events, "y")


def test_a_second_done_without_queued_still_breaks_the_stream() -> None:
    shown = ShownText()
    shown.apply(Queued(request_id="r", seq=1, reason="q"))
    shown.apply(Done(request_id="r", seq=2, text="", final_source="edge"))
    shown.apply(Done(request_id="r", seq=3, text="", final_source="cloud"))
    with pytest.raises(InvariantViolation):
        shown.apply(Done(request_id="r", seq=4, text="", final_source="cloud"))
