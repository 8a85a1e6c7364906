"""The sans-I/O core: pure, synchronous, no sockets, threads or event loops.

Tokens go in, wire events come out.  Everything here is unit-tested without a
server, and a test checks that this package imports no I/O library.
"""

from __future__ import annotations

from speculate.core.diff import DraftAligner, splice_ops
from speculate.core.protocol import (
    Commit,
    Done,
    Draft,
    Error,
    Event,
    Patch,
    Queued,
    SpliceOp,
    SSEDecoder,
    Start,
    decode_event,
    encode_json,
    encode_sse,
)
from speculate.core.session import Session, SessionConfig
from speculate.core.text import InvariantViolation, ShownText

__all__ = [
    "Commit",
    "Done",
    "Draft",
    "DraftAligner",
    "Error",
    "Event",
    "InvariantViolation",
    "Patch",
    "Queued",
    "SSEDecoder",
    "Session",
    "SessionConfig",
    "ShownText",
    "SpliceOp",
    "Start",
    "decode_event",
    "encode_json",
    "encode_sse",
    "splice_ops",
]
