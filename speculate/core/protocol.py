"""Wire events of the speculate protocol, their JSON form and SSE framing.

The event table is fixed by the design: every event carries ``event``,
``request_id`` and ``seq``; offsets count code points.  This module only converts;
it holds no state except the incremental :class:`SSEDecoder`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Route = Literal["speculative", "verify", "edge", "cloud", "cache"]
FinalSource = Literal["cloud", "edge"]
ErrorSource = Literal["edge", "cloud", "server", "client"]

# What every ``done.stats`` holds at least (the design fixes these names).
REQUIRED_STATS = (
    "draft_first_ms",
    "cloud_first_ms",
    "final_ms",
    "draft_tokens",
    "cloud_tokens",
    "edit_distance",
    "cost_usd",
    "cost_saved_usd",
)


@dataclass(frozen=True, slots=True)
class SpliceOp:
    """At offset ``at`` remove ``delete`` code points and insert ``insert``."""

    at: int
    delete: int
    insert: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "del": self.delete, "ins": self.insert}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SpliceOp:
        return cls(at=int(obj["at"]), delete=int(obj["del"]), insert=str(obj["ins"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    request_id: str
    seq: int

    @property
    def type(self) -> str:
        return _TYPE_OF[type(self)]

    def fields(self) -> dict[str, Any]:
        """The event-specific fields in their wire form."""
        return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Start(Event):
    route: Route
    reason: str
    edge_model: str
    cloud_model: str | None
    # Oldest turns left out for each side because the conversation exceeds its window.
    dropped_turns: Mapping[str, int] = field(default_factory=lambda: {"edge": 0, "cloud": 0})
    edge_model_sha256: str | None = None  # the edge model file's hash (None: not a file here)

    def fields(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "reason": self.reason,
            "edge_model": self.edge_model,
            "cloud_model": self.cloud_model,
            "dropped_turns": dict(self.dropped_turns),
            "edge_model_sha256": self.edge_model_sha256,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft(Event):
    text: str

    def fields(self) -> dict[str, Any]:
        return {"text": self.text}


@dataclass(frozen=True, slots=True, kw_only=True)
class Patch(Event):
    ops: tuple[SpliceOp, ...]
    source: str

    def fields(self) -> dict[str, Any]:
        return {"ops": [op.to_json() for op in self.ops], "source": self.source}


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit(Event):
    upto: int

    def fields(self) -> dict[str, Any]:
        return {"upto": self.upto}


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued(Event):
    reason: str

    def fields(self) -> dict[str, Any]:
        return {"reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Event):
    code: str
    message: str
    source: ErrorSource
    fatal: bool

    def fields(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "source": self.source,
            "fatal": self.fatal,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Done(Event):
    text: str
    final_source: FinalSource
    stats: dict[str, Any] = field(default_factory=dict)
    # The tools the cloud called instead of (or besides) answering, in OpenAI's shape;
    # on the wire only when there are some.
    tool_calls: list[dict[str, Any]] | None = None

    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "text": self.text,
            "final_source": self.final_source,
            "stats": self.stats,
        }
        if self.tool_calls:
            fields["tool_calls"] = self.tool_calls
        return fields


_TYPE_OF: dict[type[Event], str] = {
    Start: "start",
    Draft: "draft",
    Patch: "patch",
    Commit: "commit",
    Queued: "queued",
    Error: "error",
    Done: "done",
}
_CLASS_OF: dict[str, type[Event]] = {name: cls for cls, name in _TYPE_OF.items()}
_TYPE_BYTES: dict[type[Event], bytes] = {cls: name.encode() for cls, name in _TYPE_OF.items()}


def ends(event: Event) -> bool:
    """A ``done`` or a fatal ``error``: the end of the stream, or of its first part."""
    return isinstance(event, Done) or (isinstance(event, Error) and event.fatal)


class StreamEnd:
    """Where a stream ends, event by event (invariant 4 with the offline queue): at its
    fatal error or its ``done`` — except that after ``queued`` the first ``done`` is
    provisional, and the stream goes on to the refinement's final one."""

    def __init__(self) -> None:
        self.queued = False
        self.provisional = False

    def see(self, event: Event) -> Literal["provisional", "final"] | None:
        if isinstance(event, Queued):
            self.queued = True
        if not ends(event):
            return None
        if isinstance(event, Done) and self.queued and not self.provisional:
            self.provisional = True
            return "provisional"
        return "final"


class Sequence:
    """The events of one request in ``seq`` order, each once: a resumed stream replays
    what the client may already have (same ``seq``), which :meth:`accept` drops; a gap
    is an error. (``web/protocol.js`` holds the same rule for the browser.)"""

    def __init__(self) -> None:
        self.last = 0

    def accept(self, event: Event) -> bool:
        if event.seq <= self.last:
            return False
        if event.seq != self.last + 1:
            raise ValueError(f"event seq {event.seq} follows {self.last}: a gap")
        self.last = event.seq
        return True


def to_dict(event: Event) -> dict[str, Any]:
    kind = _TYPE_OF[type(event)]  # not ``event.type``: a property call per event
    return {"event": kind, "request_id": event.request_id, "seq": event.seq} | event.fields()


def encode_json(event: Event) -> str:
    return orjson.dumps(to_dict(event)).decode()


def encode_sse(event: Event) -> bytes:
    # As few calls as the frame allows: this runs once per event for every SSE stream.
    # orjson: compact UTF-8 (non-Latin answers stay short), never a raw newline (so always
    # a single SSE data line), and a tenth of json.dumps's time per event.
    data = orjson.dumps(to_dict(event))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, _TYPE_BYTES[type(event)], data)


class ProtocolError(ValueError):
    """A peer sent something that is not a valid speculate event."""


def decode_event(data: str | Mapping[str, Any]) -> Event:
    """Parse one event from its JSON text or decoded object."""
    try:
        obj = json.loads(data) if isinstance(data, str) else dict(data)
        kind = _CLASS_OF[obj.pop("event")]
        if kind is Patch:
            obj["ops"] = tuple(SpliceOp.from_json(op) for op in obj["ops"])
        return kind(**obj)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"not a speculate event: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class SSEMessage:
    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Incremental Server-Sent Events parser (the WHATWG algorithm, minus retry).

    Feed it text as it arrives, in chunks of any size; it yields complete messages.
    Used for our own streams and for OpenAI-compatible cloud streams alike.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None

    @property
    def pending(self) -> int:
        """Characters buffered without a line end yet (a bound for untrusted peers)."""
        return len(self._buffer)

    def feed(self, chunk: str) -> Iterator[SSEMessage]:
        self._buffer += chunk
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return
            line, width = cut
            raw = self._buffer[:line]
            self._buffer = self._buffer[line + width :]
            message = self._line(raw)
            if message is not None:
                yield message

    def _line(self, line: str) -> SSEMessage | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = SSEMessage(self._event or "message", "\n".join(self._data), self._last_id)
            self._event, self._data = "", []
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None


def _line_end(buffer: str) -> tuple[int, int] | None:
    """Index and width of the first line terminator (CRLF, LF or CR)."""
    lf, cr = buffer.find("\n"), buffer.find("\r")
    if cr == -1:
        return None if lf == -1 else (lf, 1)
    if lf != -1 and lf < cr:
        return lf, 1
    if cr == len(buffer) - 1:
        return None  # a CR at the end may be the first half of a CRLF
    return cr, 2 if buffer[cr + 1] == "\n" else 1
