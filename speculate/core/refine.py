"""The late end of a queued request: the events that follow its provisional ``done``.

A queued request's stream so far ends with ``queued`` and a provisional ``done`` whose
text was never committed.  When the cloud answers later (possibly after a restart,
from a stored copy of those events), these events continue the same stream with the
next ``seq``: one ``patch`` to the cloud's text, ``commit`` and the final ``done``.
If the refinement is given up, a non-fatal ``error`` and a final ``done`` keep the
edge's text.
"""

from __future__ import annotations

from typing import Any

from rapidfuzz.distance import Levenshtein

from speculate.core.diff import splice_ops
from speculate.core.protocol import Commit, Done, Error, Event, Patch, Queued
from speculate.core.text import InvariantViolation, ShownText


def awaiting_refinement(events: list[Event]) -> ShownText:
    """Replay a stored stream; it must end with ``queued`` and a provisional ``done``."""
    if len(events) < 2 or not isinstance(events[-2], Queued) or not isinstance(events[-1], Done):
        raise InvariantViolation("the stream does not end with queued and a provisional done")
    shown = ShownText()
    for event in events:
        shown.apply(event)
    return shown


def refined(
    events: list[Event], cloud_text: str, stats: dict[str, Any] | None = None
) -> list[Event]:
    """Continue ``events`` with the cloud's answer as the final text."""
    shown = awaiting_refinement(events)
    provisional = events[-1]
    assert isinstance(provisional, Done)
    request_id, seq = provisional.request_id, shown.last_seq
    out: list[Event] = []
    if cloud_text != shown.text:
        seq += 1
        ops = tuple(splice_ops(shown.text, cloud_text, floor=0))
        out.append(Patch(request_id=request_id, seq=seq, ops=ops, source="cloud"))
    final_stats = {
        **provisional.stats,
        **(stats or {}),
        "queued": True,
        "refined": True,
        "edit_distance": Levenshtein.distance(shown.text, cloud_text),
    }
    out.append(Commit(request_id=request_id, seq=seq + 1, upto=len(cloud_text)))
    out.append(
        Done(
            request_id=request_id,
            seq=seq + 2,
            text=cloud_text,
            final_source="cloud",
            stats=final_stats,
        )
    )
    return out


def abandoned(events: list[Event], code: str, message: str) -> list[Event]:
    """Give the refinement up: the edge's text becomes final."""
    shown = awaiting_refinement(events)
    provisional = events[-1]
    assert isinstance(provisional, Done)
    request_id, seq = provisional.request_id, shown.last_seq
    return [
        Error(
            request_id=request_id,
            seq=seq + 1,
            code=code,
            message=message,
            source="cloud",
            fatal=False,
        ),
        Commit(request_id=request_id, seq=seq + 2, upto=len(shown.text)),
        Done(
            request_id=request_id,
            seq=seq + 3,
            text=shown.text,
            final_source="edge",
            stats={**provisional.stats, "queued": True, "refined": False},
        ),
    ]
