"""Stop sequences cut the text at the first one, however the text was split."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from speculate.core.stops import StopCutter


def cut(text: str, stops: list[str]) -> str:
    """The text up to the stop that completes first, read one character at a time."""
    for end in range(1, len(text) + 1):
        starts = [end - len(s) for s in stops if s and text[:end].endswith(s)]
        if starts:
            return text[: min(starts)]
    return text


def through(cutter: StopCutter, pieces: list[str]) -> str:
    return "".join(cutter.feed(p) for p in pieces) + cutter.finish()


def test_a_stop_split_across_pieces_is_found() -> None:
    cutter = StopCutter(["\n\nUser:"])
    shown = [cutter.feed(p) for p in ["Yes.\n", "\nUs", "er: more"]]
    assert shown == ["Yes.", "", ""]
    assert cutter.stopped
    assert cutter.finish() == ""


def test_a_tail_that_was_not_a_stop_is_released() -> None:
    cutter = StopCutter(["END"])
    assert cutter.feed("the EN") == "the "
    assert cutter.feed("D") == ""  # a stop: nothing more
    other = StopCutter(["END"])
    assert other.feed("the EN") == "the "
    assert other.feed("dless") == "ENdless"
    assert other.finish() == ""


def test_no_stops_passes_everything_through_at_once() -> None:
    cutter = StopCutter([])
    assert cutter.feed("abc") == "abc"
    assert cutter.finish() == ""


letters = st.text(alphabet="abc\n", max_size=30)


@given(
    text=letters,
    stops=st.lists(st.text(alphabet="abc\n", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=8),
)
def test_any_split_gives_the_text_cut_at_its_first_stop(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    cutter = StopCutter(stops)
    assert through(cutter, pieces) == cut(text, stops)
    assert cutter.stopped == any(s in text for s in stops)


def test_overlapping_stops_cut_where_the_first_one_completes() -> None:
    # "a" completes before "bab" could: the same in one piece as in three.
    assert through(StopCutter(["bab", "a"]), ["babb"]) == "b"
    assert through(StopCutter(["bab", "a"]), ["ba", "b", "b"]) == "b"
