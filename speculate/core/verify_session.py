"""Verify mode's session: the draft is checked by the cloud and corrected in place.

Unlike the speculative session, nothing is aligned: the cloud says how much of the
draft it accepts and what follows instead, so the shown text is always the draft as
corrected so far, and everything the cloud has vouched for is committed at once.
"""

from __future__ import annotations

from speculate.core.protocol import Commit, Event
from speculate.core.session import Session


class VerifySession(Session):
    """Created with ``route="verify"``."""

    def _target(self) -> str:
        return self.draft  # verified and corrected in place, see verdict()

    def verdict(self, accepted: int, correction: str, now: float) -> list[Event]:
        """Verify: the cloud accepts the draft's first ``accepted`` characters (committed)
        and puts ``correction``, its own next token, after them; the rest of the draft
        goes.  The correction is shown but committed only once it is judged with the text
        that follows it (joined, it may tokenize off the cloud's path)."""
        if self.finished:
            return []
        if correction and self.stats["cloud_first_ms"] is None:
            self.stats["cloud_first_ms"] = self._ms(now)
        self.draft = self.draft[:accepted] + correction
        return self._show(self.draft, "cloud") + self.hold(accepted)

    def hold(self, accepted: int) -> list[Event]:
        """Verify: the cloud vouches for the first ``accepted`` characters; the rest of
        the draft stays shown, to be judged again with what follows it."""
        if self.finished or accepted <= self._committed:
            return []
        self._committed = accepted
        return [Commit(request_id=self.request_id, seq=self._next(), upto=accepted)]

    def receive_continuation(self, text: str, now: float) -> list[Event]:
        """Verify: the cloud goes on from the verified text by itself."""
        if self.finished or not text:
            return []
        if self.stats["cloud_first_ms"] is None:
            self.stats["cloud_first_ms"] = self._ms(now)
        self.draft += text
        return self._show(self.draft, "cloud") + self._commit_verified()

    def verify_finished(self, now: float) -> list[Event]:
        if self.finished:
            return []
        self.cloud_state = "done"
        self.edge_cancelled()
        return self._show(self.draft, "cloud") + self._commit_verified() + self._done("cloud", now)

    def _commit_verified(self) -> list[Event]:
        if len(self.draft) <= self._committed:
            return []
        self._committed = len(self.draft)
        return [Commit(request_id=self.request_id, seq=self._next(), upto=self._committed)]
