from __future__ import annotations

import json

import pytest

from speculate.core import (
    Commit,
    Done,
    Draft,
    Error,
    Patch,
    Queued,
    SpliceOp,
    SSEDecoder,
    Start,
    decode_event,
    encode_json,
    encode_sse,
)
from speculate.core.protocol import ProtocolError

EVENTS = [
    Start(request_id="r", seq=1, route="speculative", reason="x", edge_model="e", cloud_model=None),
    Draft(request_id="r", seq=2, text="héllo 👋\nworld"),
    Patch(request_id="r", seq=3, ops=(SpliceOp(0, 5, "Hi"), SpliceOp(2, 0, "!")), source="cloud"),
    Commit(request_id="r", seq=4, upto=3),
    Queued(request_id="r", seq=5, reason="offline"),
    Error(request_id="r", seq=6, code="cloud_timeout", message="m", source="cloud", fatal=False),
    Done(request_id="r", seq=7, text="Hi!", final_source="cloud", stats={"final_ms": 1.5}),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_json_round_trip(event: object) -> None:
    text = encode_json(event)  # type: ignore[arg-type]
    obj = json.loads(text)
    assert obj["event"] == event.type  # type: ignore[attr-defined]
    assert obj["seq"] == event.seq  # type: ignore[attr-defined]
    assert decode_event(text) == event


def test_patch_wire_names() -> None:
    obj = json.loads(encode_json(EVENTS[2]))
    assert obj["ops"] == [{"at": 0, "del": 5, "ins": "Hi"}, {"at": 2, "del": 0, "ins": "!"}]


@pytest.mark.parametrize(
    "bad", ['{"event": "nope", "seq": 1, "request_id": "r"}', "[]", "{", '{"event": "draft"}']
)
def test_decode_rejects_garbage(bad: str) -> None:
    with pytest.raises(ProtocolError):
        decode_event(bad)


def test_sse_frame_is_one_data_line() -> None:
    frame = encode_sse(EVENTS[1]).decode()
    lines = frame.split("\n")
    assert lines[0] == "id: 2"
    assert lines[1] == "event: draft"
    assert lines[2].startswith("data: {")
    assert lines[3:] == ["", ""]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_sse_decoder_any_chunking(chunk: int) -> None:
    stream = b"".join(encode_sse(e) for e in EVENTS).decode()
    stream = ": keep-alive\r\n\r\n" + stream.replace("\n", "\r\n")
    decoder = SSEDecoder()
    got = []
    for i in range(0, len(stream), chunk):
        got.extend(decoder.feed(stream[i : i + chunk]))
    assert [decode_event(m.data) for m in got] == EVENTS
    assert [m.event for m in got] == [e.type for e in EVENTS]
    assert got[-1].id == "7"


def test_sse_decoder_multiline_data_and_defaults() -> None:
    decoder = SSEDecoder()
    (message,) = list(decoder.feed("data: a\ndata:b\n\n"))
    assert message.data == "a\nb"
    assert message.event == "message"


def test_stream_end_after_queued_the_first_done_is_provisional() -> None:
    from speculate.core.protocol import Done, Error, Queued, StreamEnd

    end = StreamEnd()
    done = Done(request_id="r", seq=3, text="", final_source="edge")
    assert end.see(done) == "final"  # no queued: the first done ends it
    end = StreamEnd()
    assert end.see(Queued(request_id="r", seq=1, reason="away")) is None
    assert end.see(done) == "provisional"
    assert end.see(done) == "final"
    fatal = Error(request_id="r", seq=2, code="x", message="m", source="server", fatal=True)
    assert StreamEnd().see(fatal) == "final"
    minor = Error(request_id="r", seq=2, code="x", message="m", source="cloud", fatal=False)
    assert StreamEnd().see(minor) is None
