"""Stop sequences (OpenAI's ``stop``), applied to text that arrives in pieces.

A model's server usually honours ``stop`` itself, but not always at the same place: a
stop string may span two tokens, two chunks, or the seam where an answer paused and
continued.  :class:`StopCutter` sees every piece in order, holds back the tail that
could still become a stop sequence, and ends the text just before the first one to
complete, so the text shown is the same however the answer was split.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopCutter"]


class StopCutter:
    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""  # text not yet released: it may be the start of a stop sequence
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that may be shown now (possibly empty); after a stop, always ""."""
        if self.stopped:
            return ""
        if not self.stops:
            return piece
        text = self._held + piece
        # The stop that completes first (as a model's server stops: when one appears),
        # whatever size the pieces are; of two ending together, the longer.
        found = [(i + len(s), i) for s in self.stops if (i := text.find(s)) >= 0]
        if found:
            self.stopped, self._held = True, ""
            return text[: min(found)[1]]
        keep = self._open_tail(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def finish(self) -> str:
        """The held-back tail, once the text has ended without a stop."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _open_tail(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins some stop sequence."""
        for length in range(min(len(text), max(len(s) for s in self.stops) - 1), 0, -1):
            tail = text[-length:]
            if any(s.startswith(tail) for s in self.stops):
                return length
        return 0
