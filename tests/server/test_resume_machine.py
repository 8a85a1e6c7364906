"""A hypothesis state machine: many clients start requests over WebSocket or SSE,
drop their connections at random points and resume over either transport.  Every
stream, pieced together, must have no gap, no duplicate and end with done.text."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, rule
from websockets.sync.client import connect

from speculate.client import ws_url
from speculate.core.protocol import SSEDecoder, decode_event
from speculate.core.text import ShownText
from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.settings import Settings
from tests.scripted import BookBackend, Script, ScriptBook
from tests.servers import serve_in_thread

SCRIPT = Script(
    draft="One two three four five six seven eight nine ten eleven twelve thirteen.",
    cloud="One, two, three: four five six seven, eight nine ten! Eleven twelve.",
    draft_delay_s=0.01,
    cloud_delay_s=0.02,
    cloud_start_s=0.05,
)
BODY = {"messages": [{"role": "user", "content": "count"}], "mode": "speculative"}
URL: list[str] = []
IDS = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def server() -> Iterator[None]:
    book = ScriptBook({}, SCRIPT)
    backends = Backends(edge=BookBackend(book, "edge"), cloud=BookBackend(book, "cloud"))
    config = Settings(
        server={"resume_grace_s": 30, "rate_per_minute": 0},  # type: ignore[arg-type]
        store={"request_log": False},  # type: ignore[arg-type]
    )
    with serve_in_thread(create_app(config, backends), config) as url:
        URL.append(url)
        yield
        URL.clear()


def read_ws(socket: object, shown: ShownText, take: int) -> None:
    for _ in range(take):
        if shown.finished:
            return
        shown.apply(decode_event(str(socket.recv(timeout=10))))  # type: ignore[attr-defined]


def read_sse(request_id: str, shown: ShownText, take: int) -> None:
    if take == 0 or shown.finished:
        return
    url = f"{URL[0]}/v1/speculate/{request_id}/events"
    headers = {"Last-Event-ID": str(shown.last_seq)}
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        decoder, taken = SSEDecoder(), 0
        for chunk in response.iter_text():
            for message in decoder.feed(chunk):
                shown.apply(decode_event(message.data))  # raises on a gap or a repeat
                taken += 1
                if taken >= take or shown.finished:
                    return


class ResumeMachine(RuleBasedStateMachine):
    streams = Bundle("streams")

    def __init__(self) -> None:
        super().__init__()
        self.shown: dict[str, ShownText] = {}

    @rule(target=streams, transport=st.sampled_from(["ws", "sse"]), take=st.integers(0, 6))
    def start(self, transport: str, take: int) -> str:
        request_id = f"m{next(IDS)}"
        shown = self.shown[request_id] = ShownText()
        if transport == "ws":
            with connect(ws_url(URL[0])) as socket:  # leaving the block drops the socket
                socket.send(json.dumps({"type": "speculate", "request_id": request_id, **BODY}))
                read_ws(socket, shown, take)
        else:
            started = httpx.post(
                f"{URL[0]}/v1/speculate", json=BODY, headers={"Prefer": "respond-async"}, timeout=10
            )
            assert started.status_code == 202
            real_id = started.json()["request_id"]
            self.shown[real_id] = self.shown.pop(request_id)
            request_id = real_id
            read_sse(request_id, shown, take)
        return request_id

    @rule(request_id=streams, transport=st.sampled_from(["ws", "sse"]), take=st.integers(0, 6))
    def resume(self, request_id: str, transport: str, take: int) -> None:
        shown = self.shown[request_id]
        if transport == "ws":
            if shown.finished:
                return
            with connect(ws_url(URL[0])) as socket:
                resume = {"type": "resume", "request_id": request_id, "after": shown.last_seq}
                socket.send(json.dumps(resume))
                read_ws(socket, shown, take)
        else:
            read_sse(request_id, shown, take)

    def teardown(self) -> None:
        for request_id, shown in self.shown.items():
            while not shown.finished:
                read_sse(request_id, shown, 1000)
            assert shown.done is not None, request_id
            server_side = httpx.get(f"{URL[0]}/v1/requests/{request_id}", timeout=10).json()
            assert shown.text == server_side["text"] == SCRIPT.cloud


ResumeMachine.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
TestResume = ResumeMachine.TestCase
