from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from speculate.core.protocol import Done, Draft, Error, Event
from speculate.core.request import SpeculateRequest
from speculate.core.session import Session
from speculate.core.text import ShownText
from speculate.core.trim import Window
from speculate.engine.context import Backends
from speculate.engine.eventlog import EventLog
from speculate.engine.orchestrator import Orchestrator
from speculate.errors import CloudStalled, ContextTooLong, EdgeError
from speculate.settings import Settings
from tests.cancels import count_cancels
from tests.scripted import ScriptedBackend, words

DRAFT = "The capital of France is Paris, a city on the Seine river."
CLOUD = "Paris is the capital of France. It lies on the Seine."


def request(mode: str = "speculative") -> SpeculateRequest:
    return SpeculateRequest(
        messages=[{"role": "user", "content": "capital of France?"}],
        mode=mode,  # type: ignore[arg-type]
        request_id=SpeculateRequest.new_id(),
    )


def replay(events: list[Event]) -> ShownText:
    shown = ShownText()
    for event in events:
        shown.apply(event)
    return shown


async def run(backends: Backends, mode: str = "speculative") -> tuple[ShownText, list[Event]]:
    log = EventLog("r")
    with anyio.fail_after(10):
        await Orchestrator(Settings(), backends).run(request(mode), log)
    return replay(log.events), log.events


async def test_speculative_ends_with_cloud_and_cancels_the_edge() -> None:
    edge = ScriptedBackend("edge", words(DRAFT) * 50, delay_s=0.002)  # far longer than cloud
    cloud = ScriptedBackend("cloud", words(CLOUD), delay_s=0.003)
    shown, events = await run(Backends(edge, cloud))
    assert shown.done is not None
    assert shown.done.final_source == "cloud"
    assert shown.text == CLOUD
    assert edge.closed == edge.opened == 1  # the edge stream was left (cancelled)
    assert edge.streams[0].sent < len(edge.pieces)
    assert [e.type for e in events].count("patch") >= 1


async def test_cloud_failure_mid_stream_leaves_the_full_draft() -> None:
    edge = ScriptedBackend("edge", words(DRAFT), delay_s=0.002)
    cloud = ScriptedBackend("cloud", words(CLOUD)[:3], delay_s=0.001, error=CloudStalled("quiet"))
    shown, events = await run(Backends(edge, cloud))
    assert shown.done is not None
    assert shown.done.final_source == "edge"
    assert shown.text == DRAFT
    errors = [e for e in events if isinstance(e, Error)]
    assert [(e.source, e.code, e.fatal) for e in errors] == [("cloud", "cloud_stalled", False)]


async def test_edge_failure_is_reported_and_the_cloud_answer_stands() -> None:
    edge = ScriptedBackend("edge", words(DRAFT)[:2], error=EdgeError("llama.cpp fell over"))
    cloud = ScriptedBackend("cloud", words(CLOUD), delay_s=0.002)
    shown, events = await run(Backends(edge, cloud))
    assert shown.done is not None
    assert shown.text == CLOUD
    assert any(isinstance(e, Error) and e.source == "edge" and not e.fatal for e in events)


@pytest.mark.parametrize(("mode", "expected"), [("edge", DRAFT), ("cloud", CLOUD)])
async def test_single_sided_modes(mode: str, expected: str) -> None:
    edge = ScriptedBackend("edge", words(DRAFT))
    cloud = ScriptedBackend("cloud", words(CLOUD))
    shown, events = await run(Backends(edge, cloud), mode)
    assert shown.text == expected
    start = events[0]
    assert start.type == "start"
    assert (edge.opened, cloud.opened) == ((1, 0) if mode == "edge" else (0, 1))


async def test_cancelling_the_caller_cancels_both_sides_and_ends_the_stream() -> None:
    edge = ScriptedBackend("edge", words(DRAFT) * 100, delay_s=0.005)
    cloud = ScriptedBackend("cloud", words(CLOUD) * 100, delay_s=0.005)
    log = EventLog("r")
    orchestrator = Orchestrator(Settings(), Backends(edge, cloud))
    async with anyio.create_task_group() as group:
        group.start_soon(orchestrator.run, request(), log)
        with anyio.fail_after(5):
            async for event in log.follow():
                if event.type == "draft":
                    group.cancel_scope.cancel()
                    break
    assert edge.closed == edge.opened == 1
    assert cloud.closed == cloud.opened == 1
    shown = replay(log.events)
    assert shown.fatal is not None
    assert shown.fatal.code == "cancelled"


async def test_coalescing_flushes_after_the_interval_without_new_tokens() -> None:
    # "b" comes 5 ms after "a", then nothing for 300 ms: the 16 ms timer must send "b"
    # on its own. Without the timer it would wait and go out together with "c".
    edge = ScriptedBackend("edge", ["a", "b", "c"], gaps=[0.0, 0.005, 0.3])
    shown, events = await run(Backends(edge, None), "edge")
    drafts = [e.text for e in events if isinstance(e, Draft)]
    assert drafts == ["a", "b", "c"]
    assert shown.text == "abc"


async def test_a_failure_in_the_coalescing_timer_ends_the_stream_as_an_internal_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The timer runs as a loop callback, outside the run's task: its failure must still
    # end the stream (one fatal error), not be logged by the loop and left hanging.
    flush = Session.flush

    def failing(self: Session, now: float) -> list[Event]:
        if self.draft == "ab":  # "b" waits for the timer
            raise RuntimeError("a bug in the flush")
        return flush(self, now)

    monkeypatch.setattr(Session, "flush", failing)
    edge = ScriptedBackend("edge", ["a", "b", "c"], gaps=[0.0, 0.005, 5.0])
    shown, _ = await run(Backends(edge, None), "edge")
    assert shown.fatal is not None
    assert shown.fatal.code == "internal_error"
    assert "a bug" not in shown.fatal.message  # the details stay in the log
    assert edge.streams[0].sent == 2  # the edge was left without waiting for "c"


async def test_a_reader_gets_what_arrived_meanwhile_in_one_batch_and_stops_at_done() -> None:
    log = EventLog("r")
    drafts = [Draft(request_id="r", seq=i, text=f"w{i}") for i in (1, 2, 3)]
    log.extend(drafts[:1])
    batches = log.batches()
    assert await anext(batches) == drafts[:1]
    log.extend(drafts[1:2])
    log.extend(drafts[2:])  # two extends before the reader asks again: one batch
    assert await anext(batches) == drafts[1:]
    end = Done(request_id="r", seq=5, text="w1w2w3x", final_source="edge")
    later = Draft(request_id="r", seq=6, text="never read")
    log.extend([Draft(request_id="r", seq=4, text="x"), end, later])
    assert [e.seq for e in await anext(batches)] == [4, 5]  # cut at done
    with pytest.raises(StopAsyncIteration):
        await anext(batches)
    # Resumed after seq 2: the rest, one event at a time through follow().
    assert [e.seq async for e in log.follow(2)] == [3, 4, 5]


@pytest.mark.parametrize("leaving", [0, 1])
async def test_a_waiting_reader_wakes_for_the_next_event(leaving: int) -> None:
    # With ``leaving``: another reader of the request waited too and left (its client
    # gone). Each waits on its own, so its leaving neither cancels nor consumes the wake-up.
    log = EventLog("r")
    got: list[int] = []

    async def read() -> None:
        async for batch in log.batches():
            got.extend(e.seq for e in batch)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(read)
            async with anyio.create_task_group() as gone:
                for _ in range(leaving):
                    gone.start_soon(read)
                await anyio.wait_all_tasks_blocked()
                gone.cancel_scope.cancel()
            log.extend([Draft(request_id="r", seq=1, text="a")])
            await anyio.wait_all_tasks_blocked()
            assert got == [1]  # the reader that stayed, once
            log.extend([Done(request_id="r", seq=2, text="a", final_source="edge")])
    assert got == [1, 2]


def test_registry_forgets_the_longest_finished_first() -> None:
    from speculate.engine.eventlog import RequestRegistry

    registry = RequestRegistry(keep_finished=2)
    first, second = registry.create("first"), registry.create("second")
    second.extend([Done(request_id="second", seq=1, text="", final_source="edge")])
    first.extend([Done(request_id="first", seq=1, text="", final_source="edge")])
    registry.create("third").extend([Done(request_id="third", seq=1, text="", final_source="edge")])
    registry.create("fourth")
    assert registry.get("second") is None  # finished first, though created after "first"
    assert registry.get("first") is not None
    assert registry.get("fourth") is not None


async def test_summary_reads_route_outcome_and_cloud_errors_once() -> None:

    edge = ScriptedBackend("edge", words(DRAFT))
    cloud = ScriptedBackend("cloud", words(CLOUD)[:2], error=CloudStalled("quiet"))
    log = EventLog("r")
    with anyio.fail_after(10):
        await Orchestrator(Settings(), Backends(edge, cloud)).run(request(), log)
    summary = log.summary()
    assert (summary.route, summary.outcome, summary.final_source) == ("speculative", "done", "edge")
    assert summary.cloud_errors == ("cloud_stalled",)
    assert summary.error_code is None
    assert summary.stats["draft_tokens"] > 0
    assert EventLog("cut").summary().outcome == "cancelled"  # no end event at all


def long_chat(turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "brief"}]
    for i in range(turns):
        messages += [
            {"role": "user", "content": f"question {i} " * 5},
            {"role": "assistant", "content": f"answer {i} " * 20},
        ]
    return [*messages, {"role": "user", "content": "last"}]


def word_window(tokens: int, name: str) -> Window:
    return Window(tokens, lambda ms: sum(2 + len(m["content"].split()) for m in ms), name)


async def test_each_side_gets_as_much_history_as_its_own_window_holds() -> None:
    edge = ScriptedBackend("edge", words(DRAFT))
    cloud = ScriptedBackend("cloud", words(CLOUD))
    backends = Backends(
        edge, cloud, word_window(600, "the edge model"), word_window(4000, "the cloud model")
    )
    job = SpeculateRequest(long_chat(30), "speculative", max_tokens=100, request_id="r")
    log = EventLog("r")
    with anyio.fail_after(10):
        await Orchestrator(Settings(), backends).run(job, log)
    start = log.events[0].fields()
    assert start["dropped_turns"]["edge"] > 0
    assert start["dropped_turns"]["cloud"] == 0
    assert len(edge.asked[0]) < len(cloud.asked[0]) == len(job.messages)
    assert replay(log.events).done is not None


def test_auto_leaves_out_a_side_that_cannot_hold_the_last_turn_and_says_why() -> None:
    backends = Backends(
        ScriptedBackend("edge", []),
        ScriptedBackend("cloud", []),
        word_window(100, "the edge model"),
        word_window(4000, "the cloud model"),
    )
    orchestrator = Orchestrator(Settings(), backends)
    huge = [{"role": "user", "content": "word " * 500}]
    fitted = orchestrator.fit(SpeculateRequest(huge, "auto", max_tokens=10))
    assert fitted.mode == "cloud"
    session = orchestrator.new_session(fitted, orchestrator.decide(fitted))
    assert "does not fit the edge model's window" in session.start()[0].fields()["reason"]
    for mode in ("edge", "speculative", "verify"):
        with pytest.raises(ContextTooLong, match="the edge model"):
            orchestrator.fit(SpeculateRequest(huge, mode, max_tokens=10))  # type: ignore[arg-type]


SLOW_DRAFT = "Paris is the capital of France and a city on the Seine."
FAST_CLOUD = "Paris is the capital of France and a lovely city on the Seine river."


# The edge writes 8 words at once, then slows down; the cloud starts later, then races.
EDGE_GAPS = [0.001] * 8 + [0.05] * 4


async def test_an_edge_the_cloud_has_overtaken_is_stopped() -> None:
    edge = ScriptedBackend("edge", words(SLOW_DRAFT), gaps=EDGE_GAPS)
    cloud_gaps = [0.03] + [0.002] * (len(words(FAST_CLOUD)) - 1)
    cloud = ScriptedBackend("cloud", words(FAST_CLOUD), gaps=cloud_gaps)
    shown, _ = await run(Backends(edge, cloud))
    assert shown.done is not None
    assert shown.done.final_source == "cloud"
    assert shown.text == FAST_CLOUD
    assert shown.done.stats["edge_stopped"] == "overtaken by the cloud"
    assert edge.closed == edge.opened == 1
    assert edge.streams[0].sent < len(edge.pieces)  # it stopped before its answer's end


async def test_an_edge_the_cloud_writes_faster_than_is_stopped_before_it_is_covered() -> None:
    # Two different answers: the cloud has not covered the draft when, at a word per 10 ms,
    # it is judged to write faster than the edge's word per 20 ms.
    draft = " ".join(f"edge{i}" for i in range(60))
    answer = " ".join(f"cloud{i}" for i in range(40))
    edge = ScriptedBackend("edge", words(draft), gaps=[0.02] * 60)
    cloud = ScriptedBackend("cloud", words(answer), gaps=[0.2] + [0.01] * 39)
    shown, _ = await run(Backends(edge, cloud))
    assert shown.done is not None
    assert shown.done.final_source == "cloud"
    assert shown.text == answer
    assert shown.done.stats["edge_stopped"] == "the cloud writes faster"


async def test_an_edge_stopped_for_the_cloud_finishes_its_draft_when_the_cloud_fails() -> None:
    edge = ScriptedBackend("edge", words(SLOW_DRAFT), gaps=EDGE_GAPS)
    cloud = ScriptedBackend(
        "cloud",
        words(FAST_CLOUD)[:10],
        gaps=[0.03] + [0.001] * 8 + [0.2],
        error=CloudStalled("quiet"),
    )
    shown, events = await run(Backends(edge, cloud))
    assert shown.done is not None
    assert shown.done.final_source == "edge"
    assert shown.text == SLOW_DRAFT  # the draft goes on from where it stopped, whole
    assert edge.opened == 2  # stopped for the cloud, then asked to continue
    errors = [e for e in events if isinstance(e, Error)]
    assert [(e.source, e.code, e.fatal) for e in errors] == [("cloud", "cloud_stalled", False)]


def test_the_answer_cache_key_names_every_sampling_field_set_and_only_those() -> None:
    from speculate.core.request import Sampling

    edge, cloud = ScriptedBackend("edge", words("a")), ScriptedBackend("cloud", words("a"))
    orchestrator = Orchestrator(Settings(), Backends(edge, cloud))
    sampling = Sampling(top_k=5, stop=("\n", "User:"), response_format={"type": "json_object"})
    asked = SpeculateRequest(
        messages=[{"role": "user", "content": "q"}],
        max_tokens=16,
        temperature=0.5,
        sampling=sampling,
    )
    plain = SpeculateRequest(
        messages=[{"role": "user", "content": "q"}], max_tokens=16, temperature=0.5
    )
    # The key's form is stored in answer caches on disk: it must not drift.
    assert orchestrator.answer_variant(asked) == (
        f"{cloud.model_name}|max_tokens=16|temperature=0.5|"
        '{"response_format":{"type":"json_object"},"stop":["\\n","User:"],"top_k":5}'
    )
    assert orchestrator.answer_variant(plain) == f"{cloud.model_name}|max_tokens=16|temperature=0.5"


class _TaskRecording(ScriptedBackend):
    """Notes the task each stream is opened in."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.tasks: list[asyncio.Task[object] | None] = []

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        self.tasks.append(asyncio.current_task())
        return super().stream(*args, **kwargs)


@pytest.mark.parametrize("mode", ["edge", "cloud", "speculative"])
async def test_a_requests_first_side_runs_in_the_runs_own_task(mode: str) -> None:
    # No task switch between the request's start and its model: the first side (the
    # edge where there is one) is driven by the run's own task, any other is spawned.
    edge = _TaskRecording("edge", words(DRAFT), delay_s=0.001)
    cloud = _TaskRecording("cloud", words(CLOUD), delay_s=0.002)
    log = EventLog("r")
    with anyio.fail_after(10):
        await Orchestrator(Settings(), Backends(edge, cloud)).run(request(mode), log)
        run_task = asyncio.current_task()
    assert replay(log.events).done is not None
    first, other = (cloud, edge) if mode == "cloud" else (edge, cloud)
    assert first.tasks == [run_task]
    if mode == "speculative":
        assert other.tasks
        assert other.tasks[0] is not run_task
    else:
        assert other.tasks == []


@pytest.mark.parametrize("mode", ["edge", "cloud"])
async def test_a_run_whose_only_side_finishes_cancels_nothing(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whoever finishes first cancels the rest; a side alone has no rest to cancel.  A run
    # that must stop another side still does (the tests above).
    cancelled = count_cancels(monkeypatch)
    edge = ScriptedBackend("edge", words(DRAFT), delay_s=0.001)
    cloud = ScriptedBackend("cloud", words(CLOUD), delay_s=0.001)
    shown, _ = await run(Backends(edge, cloud), mode)
    assert shown.done is not None
    assert shown.text == (DRAFT if mode == "edge" else CLOUD)
    assert cancelled == []
