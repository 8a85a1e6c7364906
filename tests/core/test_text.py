from __future__ import annotations

import pytest

from speculate.core import Commit, Done, Draft, InvariantViolation, Patch, ShownText, SpliceOp
from speculate.core.text import apply_ops


def d(seq: int, text: str) -> Draft:
    return Draft(request_id="r", seq=seq, text=text)


def p(seq: int, *ops: tuple[int, int, str]) -> Patch:
    return Patch(request_id="r", seq=seq, ops=tuple(SpliceOp(*o) for o in ops), source="cloud")


@pytest.mark.parametrize(
    ("text", "ops", "expected"),
    [
        ("hello world", [(0, 5, "hi")], "hi world"),
        ("hello", [(5, 0, "!"), (0, 0, ">")], ">hello!"),
        ("a👋b", [(1, 1, "🎉")], "a🎉b"),  # code points, not UTF-16 units
        ("e\u0301x", [(2, 1, "y")], "e\u0301y"),  # combining mark is its own code point
        ("", [(0, 0, "漢字")], "漢字"),
    ],
)
def test_apply_ops(text: str, ops: list[tuple[int, int, str]], expected: str) -> None:
    assert apply_ops(text, [SpliceOp(*o) for o in ops]) == expected


def test_apply_ops_out_of_range() -> None:
    with pytest.raises(InvariantViolation):
        apply_ops("abc", [SpliceOp(2, 5, "")])


def test_seq_gap_is_caught() -> None:
    shown = ShownText()
    shown.apply(d(1, "a"))
    with pytest.raises(InvariantViolation, match="seq 3 follows 1"):
        shown.apply(d(3, "b"))


def test_patch_into_committed_text_is_caught() -> None:
    shown = ShownText()
    shown.apply(d(1, "hello world"))
    shown.apply(Commit(request_id="r", seq=2, upto=5))
    shown.apply(p(3, (5, 6, "!")))  # at the boundary is allowed
    with pytest.raises(InvariantViolation, match="committed"):
        shown.apply(p(4, (4, 1, "O")))


def test_commit_cannot_go_back_or_past_the_end() -> None:
    shown = ShownText()
    shown.apply(d(1, "abc"))
    shown.apply(Commit(request_id="r", seq=2, upto=2))
    with pytest.raises(InvariantViolation):
        shown.apply(Commit(request_id="r", seq=3, upto=1))
    with pytest.raises(InvariantViolation):
        ShownText().apply(Commit(request_id="r", seq=1, upto=1))


def test_done_must_match_and_end_the_stream() -> None:
    shown = ShownText()
    shown.apply(d(1, "abc"))
    with pytest.raises(InvariantViolation, match="differs"):
        shown.apply(Done(request_id="r", seq=2, text="abd", final_source="edge"))
    ok = ShownText()
    ok.apply(d(1, "abc"))
    ok.apply(Done(request_id="r", seq=2, text="abc", final_source="edge"))
    with pytest.raises(InvariantViolation, match="after the stream ended"):
        ok.apply(d(3, "x"))
