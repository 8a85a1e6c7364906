"""The durable queue and the event log around a provisional done."""

from __future__ import annotations

from pathlib import Path

import anyio

from speculate.core.protocol import Event
from speculate.core.refine import refined
from speculate.core.session import Session
from speculate.engine.eventlog import RequestRegistry
from speculate.errors import CloudUnreachable
from speculate.storage.refinement_queue import RefinementQueue


def queued(request_id: str) -> list[Event]:
    session = Session(
        request_id,
        route="speculative",
        reason="t",
        edge_model="e",
        cloud_model="c",
        queue_on_cloud_failure=True,
    )
    events = session.start() + session.receive_draft("Draft.", 0.0)
    events += session.cloud_failed(CloudUnreachable("away"), 0.1)
    return events + session.edge_finished(0.2)


def test_a_refinement_completes_once(tmp_path: Path) -> None:
    queue = RefinementQueue(tmp_path / "q.db", max_pending=2)
    job = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    assert queue.put("a", job, queued("a"))
    assert queue.put("b", job, queued("b"))
    assert not queue.put("c", job, queued("c"))  # full
    [first, _] = queue.pending()
    assert (first.request_id, first.job, first.events) == ("a", job, queued("a"))
    final = refined(first.events, "Cloud.")
    assert queue.complete("a", final)
    assert not queue.complete("a", final)  # a second completion is refused
    assert queue.counts() == {"done": 1, "pending": 1}
    reopened = RefinementQueue(tmp_path / "q.db")  # what a restart sees
    assert [row.request_id for row in reopened.pending()] == ["b"]
    by_id = {row.request_id: row for row in reopened.recent(10)}
    assert by_id["a"].all_events == queued("a") + final
    assert by_id["b"].status == "pending"
    assert reopened.failed_attempt("b", "cloud_unreachable") == 1


async def test_followers_stop_at_the_provisional_done_unless_they_stay() -> None:
    registry = RequestRegistry()
    log = registry.restore("r", queued("r"))
    assert log.awaiting_refinement
    assert not log.finished
    short = [event.seq async for event in log.follow(0)]
    assert short == list(range(1, len(queued("r")) + 1))
    late = refined(log.events, "Cloud answer.")
    seen: list[int] = []

    async def stay() -> None:
        async for event in log.follow(2, through_refinement=True):
            seen.append(event.seq)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(stay)
            await anyio.wait_all_tasks_blocked()
            log.extend(late)
    assert seen == list(range(3, late[-1].seq + 1))
    assert log.finished
    assert not log.awaiting_refinement
    # A reader resuming after the provisional done waits for and gets only the refinement.
    resumed = [event.seq async for event in log.follow(len(queued("r")))]
    assert resumed == [event.seq for event in late]
