from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speculate.core import DraftAligner, splice_ops
from speculate.core.diff import complete_words
from speculate.core.text import apply_ops

texts = st.text(alphabet=st.sampled_from(list("ab c\n👋漢e\u0301.,")), max_size=60)


@given(old=texts, new=texts)
def test_splice_ops_turn_old_into_new(old: str, new: str) -> None:
    assert apply_ops(old, splice_ops(old, new)) == new


@given(old=texts, new=texts, floor=st.integers(0, 60))
def test_splice_ops_respect_the_floor(old: str, new: str, floor: int) -> None:
    floor = min(floor, len(old), len(new))
    new = old[:floor] + new[floor:] if len(new) >= floor else new
    if new[:floor] != old[:floor]:
        return
    for op in splice_ops(old, new, floor=floor):
        assert op.at >= floor


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("same", "same", []),
        ("hello world", "hello there world", [(6, 0, "there ")]),
        ("the cat sat", "the dog sat", [(4, 3, "dog")]),
        ("the catalog", "the catalogue", [(4, 7, "catalogue")]),  # snapped to the word
        ("abc", "", [(0, 3, "")]),
    ],
)
def test_splice_ops_table(old: str, new: str, expected: list[tuple[int, int, str]]) -> None:
    assert [(o.at, o.delete, o.insert) for o in splice_ops(old, new)] == expected


def test_large_change_is_split_into_word_ops() -> None:
    old = "one two three four five six seven eight nine ten eleven twelve"
    new = "one TWO three four five six seven eight nine ten ELEVEN twelve"
    ops = splice_ops(old, new, refine_above=10)
    assert len(ops) == 2
    assert sum(len(o.insert) for o in ops) == len("TWO") + len("ELEVEN")
    assert apply_ops(old, ops) == new


def test_complete_words_holds_back_the_unfinished_word() -> None:
    assert complete_words("The capital is Par", 0) == (["The", " capital", " is"], 14)
    assert complete_words("The capital is Paris ", 14) == ([" Paris"], 20)
    assert complete_words("", 0) == ([], 0)


def aligned_tail(draft: str, cloud_words: list[str]) -> str:
    aligner = DraftAligner()
    aligner.set_draft(draft)
    aligner.add_cloud_words(cloud_words)
    return draft[aligner.tail_offset :]


@pytest.mark.parametrize(
    ("draft", "cloud", "tail"),
    [
        ("Paris is a city in the north", ["Paris", " is"], " a city in the north"),
        # a repeated common word must not make the tail skip ahead
        ("Paris is a city in the north", ["Paris", " is", " the"], " city in the north"),
        ("The capital of France is Paris.", ["The", " capital"], " of France is Paris."),
        # case and punctuation do not matter when matching
        ("hello, world and more", ["Hello", " world!"], " and more"),
        # the cloud says something else entirely: the tail is not consumed wholesale
        ("alpha beta gamma delta", ["one"], " beta gamma delta"),
        ("short", ["a", " much", " longer", " cloud", " answer"], ""),
    ],
)
def test_aligner_table(draft: str, cloud: list[str], tail: str) -> None:
    assert aligned_tail(draft, cloud) == tail


def test_aligner_window_stays_bounded_on_long_answers() -> None:
    words = [f" w{i}" for i in range(3000)]
    aligner = DraftAligner()
    aligner.set_draft("".join(words))
    for word in words[:2000]:
        aligner.add_cloud_words([word])
    assert aligner.covered_words == 2000
    assert aligner._anchor_cloud > 1900  # the window moved along


def test_draft_may_only_grow() -> None:
    aligner = DraftAligner()
    aligner.set_draft("abc")
    with pytest.raises(ValueError, match="only grow"):
        aligner.set_draft("xbc")
