"""Cloud faults from a misbehaving server over real sockets: each stream ends in time
with the right error, the draft stands, retries happen only before the first byte,
and nothing leaks."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from speculate.backends.openai_compat import OpenAICompatCloud
from speculate.backends.standin import free_port
from speculate.core.protocol import Error, SSEDecoder, decode_event
from speculate.core.text import ShownText
from speculate.engine.context import Backends
from speculate.server import create_app
from speculate.settings import Settings
from tests.faults import FaultyCloud
from tests.scripted import ScriptedBackend, words
from tests.servers import serve_in_thread

DRAFT = "The draft answer stands when the cloud misbehaves."
CLOUD = {
    "connect_timeout_s": 0.5,
    "first_token_timeout_s": 1.5,
    "stall_timeout_s": 0.5,
    "total_timeout_s": 2.5,
    "retries": 2,
    "retry_base_s": 0.05,
    "retry_cap_s": 0.2,
    "max_chunk_bytes": 1 << 20,
}
# fault -> (error code, requests the cloud should see: 3 = first try + 2 retries)
EXPECTED = {
    "refused": ("cloud_unreachable", 0),
    "silence": ("cloud_first_token_timeout", 1),
    "stall": ("cloud_stalled", 1),
    "drop": ("cloud_dropped", 1),
    "429": ("cloud_http_error", 3),
    "500": ("cloud_http_error", 3),
    "503": ("cloud_http_error", 3),
    "malformed_sse": ("cloud_protocol_error", 1),
    "malformed_json": ("cloud_protocol_error", 1),
    "endless": ("cloud_total_timeout", 1),
    "huge": ("cloud_protocol_error", 1),
}


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyCloud]:
    cloud = FaultyCloud()
    yield cloud
    cloud.close()


NO_QUEUE = {"request_log": False, "queue": False}


def established_to(port: int) -> int:
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


# What a client must never read in an error message: wrapped exception groups, reprs
# of exceptions or objects, tracebacks.
INTERNALS = re.compile(r"ExceptionGroup|Traceback|\b[A-Z]\w*(Error|Exception)\(| object at 0x")


def run_one(url: str) -> tuple[ShownText, float, list[Error]]:
    shown, started, errors = ShownText(), time.monotonic(), []
    body = {"messages": [{"role": "user", "content": "hi"}], "mode": "speculative"}
    with httpx.stream("POST", f"{url}/v1/speculate", json=body, timeout=30) as response:
        decoder = SSEDecoder()
        for text in response.iter_text():
            for message in decoder.feed(text):
                event = decode_event(message.data)
                shown.apply(event)
                if isinstance(event, Error):
                    errors.append(event)
    return shown, time.monotonic() - started, errors


def run_fault(faulty: FaultyCloud, fault: str, code: str, attempts: int) -> None:
    base = f"http://127.0.0.1:{free_port()}/v1" if fault == "refused" else faulty.url(fault)
    # Without the offline queue: these tests are about the draft standing in, at once.
    settings = Settings(cloud=CLOUD, store=NO_QUEUE)  # type: ignore[arg-type]
    cloud = OpenAICompatCloud(settings.cloud, base_url=base, model="m")
    edge = ScriptedBackend("edge", words(DRAFT), delay_s=0.01)
    before = faulty.counts[fault]
    with serve_in_thread(create_app(settings, Backends(edge, cloud)), settings) as url:
        shown, elapsed, reported = run_one(url)
        metrics = httpx.get(f"{url}/metrics").text
    assert [e.code for e in reported] == [code], fault
    for error in reported:  # said as a person reads it, without internals
        assert not INTERNALS.search(error.message), f"{fault}: {error.message}"
    errors = [e for e in [shown.fatal] if e]
    assert not errors, f"{fault}: fatal {errors}"
    assert shown.done is not None, fault
    assert shown.done.final_source == "edge", fault
    assert shown.text == DRAFT, fault
    assert elapsed < CLOUD["total_timeout_s"] + 1.5, f"{fault} took {elapsed:.2f} s"
    assert faulty.counts[fault] - before == attempts, (
        f"{fault}: {faulty.counts[fault] - before} requests"
    )
    assert "speculate_active_requests 0.0" in metrics
    got = [
        line for line in metrics.splitlines() if line.startswith("speculate_cloud_errors_total{")
    ]
    assert any(f'code="{code}"' in line for line in got), f"{fault}: {got}"
    assert established_to(faulty.port) == 0, f"{fault}: a socket to the cloud stayed open"


def test_every_fault_ends_in_time_with_the_draft(faulty: FaultyCloud) -> None:
    process = psutil.Process()
    run_fault(faulty, "refused", "cloud_unreachable", 0)  # first use opens lasting fds
    # Python threads (ours, anyio's, uvicorn's); native threads that C libraries start
    # once on first use are not leaks.
    fds_before, threads_before = process.num_fds(), threading.active_count()
    for fault, (code, attempts) in EXPECTED.items():
        run_fault(faulty, fault, code, attempts)
    # Worker threads (DNS lookups) idle out after 10 s; a leak never does.
    deadline = time.monotonic() + 20
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.2)  # bounded: waiting for idle worker threads to exit
    assert threading.active_count() <= threads_before
    assert process.num_fds() <= fds_before  # no socket, pipe or file left open


def test_the_fault_codes_reach_the_client(faulty: FaultyCloud) -> None:
    settings = Settings(cloud=CLOUD, store=NO_QUEUE)  # type: ignore[arg-type]
    cloud = OpenAICompatCloud(settings.cloud, base_url=faulty.url("stall"), model="m")
    edge = ScriptedBackend("edge", words(DRAFT))
    with serve_in_thread(create_app(settings, Backends(edge, cloud)), settings) as url:
        shown = ShownText()
        events = []
        body = {"messages": [{"role": "user", "content": "hi"}], "mode": "speculative"}
        with httpx.stream("POST", f"{url}/v1/speculate", json=body, timeout=30) as response:
            decoder = SSEDecoder()
            for text in response.iter_text():
                for message in decoder.feed(text):
                    event = decode_event(message.data)
                    events.append(event)
                    shown.apply(event)
    errors = [e for e in events if isinstance(e, Error)]
    assert [(e.code, e.source, e.fatal) for e in errors] == [("cloud_stalled", "cloud", False)]
