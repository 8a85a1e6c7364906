from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speculate.core import (
    Commit,
    Done,
    Draft,
    Error,
    Event,
    Patch,
    Session,
    SessionConfig,
    ShownText,
)
from speculate.core.protocol import REQUIRED_STATS, Route, Start
from speculate.errors import CloudUnreachable, EdgeError


def session(route: Route = "speculative", progressive: bool = False, **config: float) -> Session:
    return Session(
        "r1",
        route=route,
        reason="test",
        edge_model="edge",
        cloud_model=None if route == "edge" else "cloud",
        config=SessionConfig(**config),  # type: ignore[arg-type]
        commit_progressively=progressive,
    )


def replay(events: list[Event]) -> ShownText:
    shown = ShownText()
    for event in events:
        shown.apply(event)
    return shown


def words(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*?", text) or [text]


def test_edge_route_streams_draft_and_ends_with_it() -> None:
    s = session("edge")
    events = s.start() + s.receive_draft("Hello", 0.0) + s.receive_draft(" world", 0.001)
    events += s.edge_finished(0.002)
    shown = replay(events)
    assert isinstance(events[0], Start)
    assert isinstance(events[1], Draft)  # the first token is never held back
    assert shown.done is not None
    assert shown.done.final_source == "edge"
    assert shown.text == "Hello world"
    assert shown.done.stats["draft_tokens"] == 2


def test_draft_tokens_are_coalesced_until_the_deadline() -> None:
    s = session("edge", coalesce_s=0.016, coalesce_chars=1000)
    events = s.start() + s.receive_draft("a", 0.0)
    assert [e.type for e in events] == ["start", "draft"]
    assert s.receive_draft("b", 0.005) == []
    assert s.receive_draft("c", 0.010) == []
    assert s.next_flush_at == pytest.approx(0.016)  # one interval after the last send
    flushed = s.flush(0.016)
    assert [(e.type, e.text) for e in flushed if isinstance(e, Draft)] == [("draft", "bc")]
    assert s.next_flush_at is None


def test_a_token_after_a_quiet_spell_goes_out_at_once() -> None:
    s = session("edge", coalesce_s=0.016, coalesce_chars=1000)
    s.start()
    s.receive_draft("a", 0.0)
    late = s.receive_draft(" b", 0.1)  # a slow model: no waiting, no timer
    assert [(e.type, e.text) for e in late if isinstance(e, Draft)] == [("draft", " b")]
    assert s.next_flush_at is None


def test_coalescing_flushes_early_on_size() -> None:
    s = session("edge", coalesce_s=10.0, coalesce_chars=4)
    s.start()
    s.receive_draft("x", 0.0)
    assert s.receive_draft("ab", 0.001) == []
    assert len(s.receive_draft("cdef", 0.002)) == 1


def test_cloud_failure_restores_the_full_draft() -> None:
    s = session()
    events = s.start()
    events += s.receive_draft("The sky is blue today.", 0.0)
    events += s.receive_cloud("A sky ", 0.01)
    assert s.shown.startswith("A sky")
    events += s.cloud_failed(CloudUnreachable("down"), 0.02)
    events += s.edge_finished(0.03)
    shown = replay(events)
    errors = [e for e in events if isinstance(e, Error)]
    assert [(e.code, e.source, e.fatal) for e in errors] == [("cloud_unreachable", "cloud", False)]
    assert shown.done is not None
    assert shown.done.final_source == "edge"
    assert shown.text == "The sky is blue today."


def test_cloud_route_failure_is_fatal() -> None:
    s = session("cloud")
    events = s.start() + s.cloud_failed(CloudUnreachable("down"), 0.01)
    shown = replay(events)
    assert shown.fatal is not None
    assert shown.fatal.code == "cloud_unreachable"


def test_edge_failure_in_speculative_waits_for_the_cloud() -> None:
    s = session()
    events = s.start() + s.receive_draft("Part", 0.0) + s.edge_failed(EdgeError("boom"), 0.01)
    assert not s.finished
    events += s.receive_cloud("Full answer.", 0.02) + s.cloud_finished(0.03)
    shown = replay(events)
    assert shown.done is not None
    assert shown.text == "Full answer."
    assert shown.done.final_source == "cloud"


def test_both_sides_failing_without_text_is_one_fatal_error() -> None:
    s = session()
    events = (
        s.start() + s.edge_failed(EdgeError("e"), 0.0) + s.cloud_failed(CloudUnreachable("c"), 0)
    )
    shown = replay(events)
    assert shown.fatal is not None
    assert shown.fatal.code == "no_answer"


def test_cancel_ends_with_one_fatal_error_and_nothing_after() -> None:
    s = session()
    events = s.start() + s.receive_draft("x", 0.0) + s.cancel()
    events += s.receive_draft("y", 0.01) + s.edge_finished(0.02) + s.cancel()
    shown = replay(events)
    assert shown.fatal is not None
    assert shown.fatal.code == "cancelled"
    assert events[-1] is shown.fatal


def test_stats_and_costs() -> None:
    s = session(cloud_usd_per_mtok_in=1.0, cloud_usd_per_mtok_out=2.0)
    s.stats["prompt_tokens"] = 10
    events = s.start() + s.receive_draft("a b", 0.001) + s.receive_cloud("a c", 0.002)
    events += s.cloud_finished(0.004)
    done = events[-1]
    assert isinstance(done, Done)
    assert set(REQUIRED_STATS) <= set(done.stats)
    assert done.stats["edit_distance"] == 1
    assert done.stats["cost_usd"] == pytest.approx((10 * 1.0 + 1 * 2.0) * 1e-6)
    assert done.stats["cost_saved_usd"] == pytest.approx(0.0)
    assert isinstance(events[-2], Commit)
    assert events[-2].upto == len("a c")


def test_shown_text_morphs_toward_the_cloud_while_keeping_the_tail() -> None:
    s = session()
    s.start()
    s.receive_draft("Paris is a big city in the north of France.", 0.0)
    s.receive_cloud("Paris is the ", 0.01)
    assert s.shown == "Paris is the big city in the north of France."
    patches = s.receive_cloud("capital ", 0.02)
    assert all(isinstance(e, Patch) for e in patches)
    assert s.shown.startswith("Paris is the capital")
    assert s.shown.endswith("in the north of France.")


unicode_words = st.lists(
    st.text(alphabet=st.sampled_from(list("abcxyz漢字👋éé.,!")), min_size=1, max_size=6),
    max_size=25,
)
seps = st.sampled_from([" ", "\n", "  ", " \n"])


@st.composite
def answers(draw: st.DrawFn) -> str:
    parts = draw(unicode_words)
    return "".join(w + draw(seps) for w in parts).rstrip(" ") if parts else ""


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points) if text[a:b]]


@settings(max_examples=300, deadline=None)
@given(
    draft=answers(),
    cloud=answers(),
    draft_cuts=st.lists(st.integers(0, 400), max_size=20),
    cloud_cuts=st.lists(st.integers(0, 400), max_size=20),
    order=st.lists(st.booleans(), max_size=60),
    cloud_fails=st.booleans(),
    coalesce=st.sampled_from([0.0, 0.016, 1.0]),
    progressive=st.booleans(),
)
def test_invariants_hold_for_any_interleaving(
    draft: str,
    cloud: str,
    draft_cuts: list[int],
    cloud_cuts: list[int],
    order: list[bool],
    cloud_fails: bool,
    coalesce: float,
    progressive: bool,
) -> None:
    s = session(progressive=progressive, coalesce_s=coalesce, coalesce_chars=50)
    events = s.start()
    edge_chunks, cloud_chunks = chunked(draft, draft_cuts), chunked(cloud, cloud_cuts)
    now = 0.0
    picks = iter(order)

    def feed_edge() -> None:
        nonlocal events
        events += s.receive_draft(edge_chunks.pop(0), now)

    # An edge the cloud has overtaken is stopped (its chunks wait): it goes on only if the
    # cloud then fails, from where it stopped, as the run restarts it.
    while (edge_chunks and not s.edge_overtaken) or cloud_chunks:
        now += 0.005
        edge_ready = bool(edge_chunks) and not s.edge_overtaken
        take_edge = next(picks, True) if edge_ready and cloud_chunks else edge_ready
        if take_edge:
            feed_edge()
        else:
            events += s.receive_cloud(cloud_chunks.pop(0), now)
        flush_at = s.next_flush_at
        if flush_at is not None and flush_at <= now:
            events += s.flush(now)
    if cloud_fails:
        events += s.cloud_failed(CloudUnreachable("gone"), now)
        while edge_chunks:
            feed_edge()
        events += s.edge_finished(now)
    else:
        events += s.edge_finished(now)
        events += s.cloud_finished(now)
    shown = replay(events)  # checks invariants 1-3 event by event
    terminal = [e for e in events if isinstance(e, Done) or (isinstance(e, Error) and e.fatal)]
    assert len(terminal) == 1
    assert events[-1] is terminal[0]  # invariant 4
    assert shown.done is not None
    committed_cloud = max([e.upto for e in events[:-2] if isinstance(e, Commit)], default=0)
    if cloud_fails and committed_cloud:
        # Progressive commits: the committed cloud words stay, the draft's tail follows.
        assert progressive
        assert shown.text.startswith(cloud[:committed_cloud])
    else:
        assert shown.text == (draft if cloud_fails else cloud)
    assert shown.done.final_source == ("edge" if cloud_fails else "cloud")


@pytest.mark.parametrize("route", ["edge", "cloud", "speculative"])
def test_progressive_commits_follow_the_final_text(route: Route) -> None:
    s = session(route, progressive=True, coalesce_s=0.0)
    events = s.start()
    if route != "cloud":
        events += s.receive_draft("Draft words here ", 0.001)
    if route != "edge":
        events += s.receive_cloud("Cloud words ", 0.002) + s.receive_cloud("arrive", 0.003)
        events += s.cloud_finished(0.004)
    else:
        events += s.edge_finished(0.004)
    shown = replay(events)  # also checks no patch touches committed text
    commits = [e.upto for e in events if isinstance(e, Commit)]
    assert len(commits) >= 2  # text was committed before the end, not only at done
    assert commits == sorted(commits)
    assert shown.done is not None


def test_progressive_cloud_failure_keeps_committed_cloud_words() -> None:
    s = session(progressive=True)
    events = s.start() + s.receive_draft("The sky is blue today.", 0.0)
    events += s.receive_cloud("The heavens ", 0.01)
    events += s.cloud_failed(CloudUnreachable("gone"), 0.02) + s.edge_finished(0.03)
    shown = replay(events)
    assert shown.text.startswith("The heavens")
    assert shown.text.endswith("blue today.")


def test_a_tail_that_starts_a_word_is_kept_apart() -> None:
    s = session()
    s.start()
    s.receive_draft("alpha beta", 0.0)
    s.receive_cloud("zeta ", 0.01)
    assert " " in s.shown
    assert not s.shown.startswith("zetaalpha")


def test_cloud_only_text_goes_out_as_it_arrives_not_a_word_at_a_time() -> None:
    """Nothing shown in mode cloud can change: a piece that ends mid-word is shown (and,
    for append-only clients, committed) at once."""
    s = session("cloud", progressive=True)
    s.start()
    events = s.receive_cloud("Hel", 0.1)
    shown = [e for e in events if isinstance(e, Patch)]
    assert shown
    assert s.shown == "Hel"
    assert [e.upto for e in events if isinstance(e, Commit)] == [3]
    s.receive_cloud("lo wor", 0.2)
    assert s.shown == "Hello wor"


def test_the_edge_stops_once_the_cloud_has_passed_its_whole_draft() -> None:
    s = session("speculative", overtaken_after_tokens=1)
    events = s.start() + s.receive_draft("The sky is blue", 0.0)
    events += s.receive_cloud("The sky ", 0.1)
    assert s.edge == "running"  # " is blue" of the draft is still ahead of the cloud
    assert not s.edge_overtaken
    events += s.receive_cloud("is blue because ", 0.2)
    assert s.edge_overtaken  # everything the edge wrote is covered
    assert s.edge == "done"
    assert s.stats["edge_stopped"] == "overtaken by the cloud"
    assert s.receive_draft(" green", 0.3) == []  # a token still in flight is dropped
    events += s.receive_cloud("light scatters.", 0.4) + s.cloud_finished(0.5)
    shown = replay(events)
    assert shown.done is not None
    assert shown.done.final_source == "cloud"
    assert shown.text == "The sky is blue because light scatters."


def test_a_short_draft_is_never_cut_off_at_its_start() -> None:
    s = session("speculative")  # the default: the draft must have 8 tokens first
    s.start()
    s.receive_draft("The", 0.0)
    s.receive_cloud("The sky is blue because ", 0.1)
    assert s.edge == "running"
    assert not s.edge_overtaken


def paced(
    s: Session, draft_every: float, cloud_every: float, cloud_from: float, until: float
) -> list[Event]:
    """Feed ``s`` a draft token ("edge ", 5 characters) every ``draft_every`` s from 0 and a
    cloud token ("cloud ", 6) every ``cloud_every`` s from ``cloud_from``, in time order,
    while the edge runs; returns the events."""
    events = s.start()
    next_draft, next_cloud = 0.0, cloud_from
    while min(next_draft, next_cloud) < until:
        if next_draft <= next_cloud:
            events += s.receive_draft("edge ", next_draft)
            next_draft += draft_every
        else:
            events += s.receive_cloud("cloud ", next_cloud)
            next_cloud += cloud_every
    return events


def test_the_edge_stops_once_the_cloud_writes_faster() -> None:
    # 120 characters/s of draft against 300 of cloud: the draft is far ahead (its text is
    # not the cloud's) but will be covered; after the cloud's 8th token the edge stops.
    s = session("speculative")
    paced(s, draft_every=1 / 24, cloud_every=1 / 50, cloud_from=0.5, until=0.5 + 8 / 50)
    assert s.edge_overtaken
    assert s.edge == "done"
    assert s.stats["edge_stopped"] == "the cloud writes faster"
    assert s.stats["cloud_tokens"] == 8
    assert s.receive_draft("edge ", 0.7) == []  # a token still in flight is dropped


def test_an_edge_that_writes_faster_than_the_cloud_goes_on() -> None:
    s = session("speculative")  # 120 characters/s of draft against 60 of cloud
    paced(s, draft_every=1 / 24, cloud_every=1 / 10, cloud_from=0.5, until=3.0)
    assert s.stats["cloud_tokens"] == 25
    assert s.edge == "running"
    assert not s.edge_overtaken


def test_the_cloud_is_not_judged_by_fewer_than_eight_tokens() -> None:
    s = session("speculative")  # 7 cloud tokens over 0.12 s, far faster than the edge
    paced(s, draft_every=1 / 24, cloud_every=0.02, cloud_from=0.5, until=0.5 + 7 * 0.02)
    assert s.stats["cloud_tokens"] == 7
    assert s.edge == "running"
    s.receive_cloud("cloud ", 0.5 + 7 * 0.02)  # the 8th
    assert s.stats["edge_stopped"] == "the cloud writes faster"


def test_the_cloud_is_not_judged_by_a_burst_that_came_in_one_read() -> None:
    s = session("speculative")  # 10 cloud tokens within 10 ms: the network's pace, not its
    paced(s, draft_every=1 / 24, cloud_every=0.001, cloud_from=1.0, until=1.0095)
    assert s.stats["cloud_tokens"] == 10
    assert s.edge == "running"
    s.receive_cloud("cloud ", 1.0 + 0.05)  # 50 ms after its first piece, still far faster
    assert s.stats["edge_stopped"] == "the cloud writes faster"


def test_an_edge_that_has_barely_begun_is_not_stopped_for_a_faster_cloud() -> None:
    s = session("speculative")  # a draft of fewer than 8 tokens is never cut off
    paced(s, draft_every=0.2, cloud_every=0.001, cloud_from=0.0001, until=1.0)
    assert s.stats["draft_tokens"] == 5
    assert s.edge == "running"


def test_an_edge_stopped_for_a_faster_cloud_goes_on_if_the_cloud_fails() -> None:
    s = session("speculative")
    events = paced(s, draft_every=1 / 24, cloud_every=1 / 50, cloud_from=0.5, until=0.67)
    assert s.edge_overtaken
    draft = s.draft
    events += s.cloud_failed(CloudUnreachable("gone"), 0.7)
    assert s.edge == "running"
    assert "edge_stopped" not in s.stats
    events += s.receive_draft("more", 0.75) + s.edge_finished(0.8)
    shown = replay(events)
    assert shown.done is not None
    assert shown.done.final_source == "edge"
    assert shown.text == draft + "more"


def test_an_edge_stopped_for_the_cloud_goes_on_if_the_cloud_fails() -> None:
    s = session("speculative", overtaken_after_tokens=1)
    events = s.start() + s.receive_draft("One two", 0.0) + s.receive_cloud("One two three ", 0.1)
    assert s.edge_overtaken
    events += s.cloud_failed(CloudUnreachable("gone"), 0.2)
    assert s.edge == "running"
    assert not s.edge_overtaken
    assert not s.finished
    events += s.receive_draft(" four", 0.3) + s.edge_finished(0.4)
    shown = replay(events)
    assert shown.done is not None
    assert shown.done.final_source == "edge"
    assert shown.text == "One two four"
