"""The shown text: what a client displays, rebuilt from events, invariants enforced.

Clients (the terminal client, the tests, any app) feed every event in order; a
violation of the four protocol invariants raises :class:`InvariantViolation` at the
event that broke it, so a bug is caught where it happens, not at the end.
"""

from __future__ import annotations

from speculate.core.protocol import Commit, Done, Draft, Error, Event, Patch, SpliceOp, StreamEnd


class InvariantViolation(ValueError):
    """An event stream broke one of the protocol's invariants."""


def apply_ops(text: str, ops: tuple[SpliceOp, ...] | list[SpliceOp]) -> str:
    """Apply splice ops in order; offsets are code points of the text at that step."""
    for op in ops:
        if op.at < 0 or op.delete < 0 or op.at + op.delete > len(text):
            raise InvariantViolation(f"splice {op} out of range for text of {len(text)}")
        text = text[: op.at] + op.insert + text[op.at + op.delete :]
    return text


class ShownText:
    """Applies ``draft``/``patch``/``commit``/``done`` events and checks every invariant.

    A ``done`` that follows ``queued`` is provisional: the queued refinement continues
    the stream (``patch``, ``commit``, the final ``done``) with the next ``seq``."""

    def __init__(self) -> None:
        self.text = ""
        self.committed = 0
        self.last_seq = 0
        self.done: Done | None = None
        self.fatal: Error | None = None
        self.provisional: Done | None = None  # a done that a refinement will follow
        self._end = StreamEnd()

    @property
    def finished(self) -> bool:
        return self.done is not None or self.fatal is not None

    def apply(self, event: Event) -> None:
        if self.finished:
            raise InvariantViolation(f"event {event.type} seq={event.seq} after the stream ended")
        if event.seq != self.last_seq + 1:
            raise InvariantViolation(f"seq {event.seq} follows {self.last_seq}")
        self.last_seq = event.seq
        end = self._end.see(event)
        if isinstance(event, Draft):
            self.text += event.text
        elif isinstance(event, Patch):
            for op in event.ops:
                if op.at < self.committed and (op.delete or op.insert):
                    raise InvariantViolation(
                        f"patch at {op.at} touches committed text [0, {self.committed})"
                    )
            self.text = apply_ops(self.text, event.ops)
        elif isinstance(event, Commit):
            if not self.committed <= event.upto <= len(self.text):
                raise InvariantViolation(
                    f"commit {event.upto} outside [{self.committed}, {len(self.text)}]"
                )
            self.committed = event.upto
        elif isinstance(event, Done):
            if event.text != self.text:
                raise InvariantViolation("done.text differs from the text the events built")
            if end == "provisional":
                self.provisional = event
            else:
                self.done = event
        elif isinstance(event, Error) and event.fatal:
            self.fatal = event
