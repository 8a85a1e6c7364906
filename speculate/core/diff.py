"""Draft-vs-cloud alignment and minimal splice operations.

Two jobs:

* :class:`DraftAligner` answers "which part of the draft has the cloud not covered
  yet?".  It aligns the cloud's complete words against the draft's words with a
  semi-global edit distance (the cloud prefix must be used whole, the draft may end
  anywhere) inside a small window that starts at a moving anchor, so each update
  costs O(window²) whatever the answer's length, and the tail never jumps backwards.
* :func:`splice_ops` turns "old shown text -> new shown text" into few, small,
  word-snapped splice operations; rapidfuzz does the word-level alignment in C.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from speculate.core.protocol import SpliceOp

_WORD = re.compile(r"\s*\S+")
_PIECE = re.compile(r"\s+|\S+")
_PUNCT = ".,;:!?\"'()[]{}*_`«»“”‘’"


def word_key(token: str) -> str:
    """How two words are compared: case and surrounding punctuation do not matter."""
    stripped = token.strip()
    return stripped.strip(_PUNCT).casefold() or stripped


@dataclass(slots=True)
class _Window:
    rows: list[list[int]]
    cloud: list[str]
    draft: list[str]


class DraftAligner:
    """Tracks where the cloud's words have got to inside the draft.

    ``reanchor_after`` and ``keep_context`` bound the window: once more than
    ``reanchor_after`` cloud words are unanchored, the anchor moves along the best
    path so that only ``keep_context`` words stay in play.  ``slack`` is how far past
    the cloud's length the draft may be searched (the draft may have said more).
    """

    def __init__(self, *, reanchor_after: int = 16, keep_context: int = 8, slack: int = 24):
        self.reanchor_after = reanchor_after
        self.keep_context = keep_context
        self.slack = slack
        self._draft = ""
        self._starts: list[int] = []  # char offset where each draft token begins
        self._keys: list[str] = []
        self._cloud: list[str] = []
        self._anchor_cloud = 0
        self._anchor_draft = 0
        self._cut = 0  # draft token index where the uncovered tail begins

    # -- draft side ---------------------------------------------------------------
    def set_draft(self, draft: str) -> None:
        """The draft only grows; re-tokenise from the last (maybe partial) token."""
        if not draft.startswith(self._draft):
            raise ValueError("the draft may only grow")
        resume = self._starts.pop() if self._starts else 0
        if self._keys:
            self._keys.pop()
        for match in _WORD.finditer(draft, resume):
            self._starts.append(match.start())
            self._keys.append(word_key(match.group()))
        self._draft = draft

    # -- cloud side ---------------------------------------------------------------
    def add_cloud_words(self, words: list[str]) -> None:
        if not words:
            return
        self._cloud.extend(word_key(w) for w in words)
        self._realign()

    @property
    def tail_offset(self) -> int:
        """Char offset in the draft where the part not yet covered by the cloud begins."""
        if not self._cloud:
            return 0
        return self._starts[self._cut] if self._cut < len(self._starts) else len(self._draft)

    @property
    def covered_words(self) -> int:
        return self._cut

    def _realign(self) -> None:
        window = self._window()
        m = len(window.cloud)
        last = window.rows[m]
        best = min(range(len(last)), key=lambda j: (last[j], -j))
        self._cut = self._anchor_draft + best
        if m > self.reanchor_after:
            i, j = _path_point(window, best, m - self.keep_context)
            self._anchor_cloud += i
            self._anchor_draft += j

    def _window(self) -> _Window:
        cloud = self._cloud[self._anchor_cloud :]
        stop = self._anchor_draft + len(cloud) + self.slack
        draft = self._keys[self._anchor_draft : stop]
        width = len(draft)
        rows = [list(range(width + 1))]
        for i, word in enumerate(cloud, 1):
            above = rows[-1]
            row = [i]
            for j in range(1, width + 1):
                row.append(min(above[j - 1] + (word != draft[j - 1]), above[j] + 1, row[j - 1] + 1))
            rows.append(row)
        return _Window(rows, cloud, draft)


def _path_point(window: _Window, end_col: int, target_row: int) -> tuple[int, int]:
    """Walk the optimal path back from (m, end_col); return where it enters ``target_row``."""
    rows, cloud, draft = window.rows, window.cloud, window.draft
    i, j = len(cloud), end_col
    while i > target_row:
        here = rows[i][j]
        if j > 0 and here == rows[i - 1][j - 1] + (cloud[i - 1] != draft[j - 1]):
            i, j = i - 1, j - 1
        elif here == rows[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return i, j


def complete_words(text: str, start: int) -> tuple[list[str], int]:
    """Words of ``text`` from ``start`` that are followed by whitespace (so are finished).

    Returns the words and the offset just past the last finished word.
    """
    words: list[str] = []
    end = start
    for match in _WORD.finditer(text, start):
        if match.end() >= len(text):
            break
        words.append(match.group())
        end = match.end()
    return words, end


def splice_ops(old: str, new: str, *, floor: int = 0, refine_above: int = 24) -> list[SpliceOp]:
    """Small splice ops turning ``old`` into ``new``, applied in order.

    The changed region is found by trimming the common prefix and suffix, then
    widened to whole words (never below ``floor``, the committed length) so a client
    highlights words, not letters.  A large region is split along a word-level
    alignment into several ops, so unchanged words inside it are not resent.
    """
    if old == new:
        return []
    start = _common_prefix(old, new)
    limit = min(len(old), len(new)) - start
    tail = _common_suffix(old, new, limit)
    old_end, new_end = len(old) - tail, len(new) - tail
    # Widen to whole words, but only where the edit boundary falls inside a word.
    if _inside_word(old, new, start, start, start):
        while start > floor and not old[start - 1].isspace():
            start -= 1
    if _inside_word(old, new, old_end, new_end, start, after=True):
        while old_end < len(old) and not old[old_end].isspace():
            old_end += 1
            new_end += 1
    removed, inserted = old[start:old_end], new[start:new_end]
    if min(len(removed), len(inserted)) <= refine_above:
        return [SpliceOp(start, len(removed), inserted)]
    return _word_ops(removed, inserted, start)


def _inside_word(
    old: str, new: str, old_at: int, new_at: int, start: int, *, after: bool = False
) -> bool:
    """Does the boundary at ``old_at``/``new_at`` split a word on either side?"""

    def splits(text: str, at: int) -> bool:
        return 0 < at < len(text) and not text[at - 1].isspace() and not text[at].isspace()

    if after and (old_at <= start and new_at <= start):
        return False
    return splits(old, old_at) or splits(new, new_at)


def _word_ops(removed: str, inserted: str, base: int) -> list[SpliceOp]:
    a, b = _PIECE.findall(removed), _PIECE.findall(inserted)
    a_at = _offsets(a)
    b_at = _offsets(b)
    ops: list[SpliceOp] = []
    shift = 0  # how much earlier ops changed the length before this point
    for block in Levenshtein.opcodes(a, b):
        if block.tag == "equal":
            continue
        i1, i2, j1, j2 = block.src_start, block.src_end, block.dest_start, block.dest_end
        at = base + a_at[i1] + shift
        delete = a_at[i2] - a_at[i1]
        insert = inserted[b_at[j1] : b_at[j2]]
        previous = ops[-1] if ops else None
        if previous is not None and previous.at + len(previous.insert) == at:
            ops[-1] = SpliceOp(previous.at, previous.delete + delete, previous.insert + insert)
        else:
            ops.append(SpliceOp(at, delete, insert))
        shift += len(insert) - delete
    return ops


def _offsets(pieces: list[str]) -> list[int]:
    offsets = [0]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    return offsets


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # binary search on slices: C-speed compares, O(log n) of them
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return lo
