"""``speculate soak``: many clients, random disconnects, resumes and cancels.

N clients each run M requests (or until the time is up) against a server with fast
fake backends on loopback (or ``--url`` for a running server).  Each request picks
WebSocket or SSE, may drop its connection at a random point and resume over either
transport, or cancel.  It counts events lost (gaps) and duplicated (repeats), texts
that differ from the server's, and the server's memory and descriptor growth.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
import httpx
import psutil
import websockets
from rich.console import Console
from rich.table import Table

from speculate.client import ws_url
from speculate.core.protocol import Done, Error, Event, SSEDecoder, decode_event

MAX_RESUMES = 100  # a stream that never ends (say, a 404 on resume) is an error, not a hang


@dataclass
class SoakResult:
    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    disconnects: int = 0
    resumes: int = 0
    events: int = 0
    lost_events: int = 0
    duplicate_events: int = 0
    mismatched_texts: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    rss_growth_mb: float = 0.0
    fd_growth: int = 0
    seconds: float = 0.0


class _Tracker:
    """Rebuilds one stream, counting gaps and repeats instead of failing on them."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.final: Event | None = None

    def see(self, event: Event, result: SoakResult) -> None:
        result.events += 1
        if event.seq <= self.last_seq:
            result.duplicate_events += 1
            return
        if event.seq > self.last_seq + 1:
            result.lost_events += event.seq - self.last_seq - 1
        self.last_seq = event.seq
        if isinstance(event, Done) or (isinstance(event, Error) and event.fatal):
            self.final = event


async def _ws_read(
    url: str,
    first: dict[str, Any],
    tracker: _Tracker,
    result: SoakResult,
    drop_after: int | None,
    cancel_id: str | None,
) -> None:
    # A dropping client simulates a lost network: it does not wait for the close handshake.
    async with websockets.connect(ws_url(url), compression=None, close_timeout=0.2) as socket:
        await socket.send(json.dumps(first))
        seen = 0
        while tracker.final is None:
            with anyio.fail_after(30):
                tracker.see(decode_event(str(await socket.recv())), result)
            seen += 1
            if cancel_id is not None and seen == 2:
                await socket.send(json.dumps({"type": "cancel", "request_id": cancel_id}))
            if drop_after is not None and seen >= drop_after:
                return  # leaving the block drops the connection


async def _sse_read(
    client: httpx.AsyncClient,
    url: str,
    request_id: str,
    tracker: _Tracker,
    result: SoakResult,
    drop_after: int | None,
) -> None:
    headers = {"Last-Event-ID": str(tracker.last_seq)}
    async with client.stream(
        "GET", f"{url}/v1/speculate/{request_id}/events", headers=headers
    ) as response:
        decoder, seen = SSEDecoder(), 0
        async for chunk in response.aiter_text():
            for message in decoder.feed(chunk):
                tracker.see(decode_event(message.data), result)
                seen += 1
                if tracker.final is not None or (drop_after is not None and seen >= drop_after):
                    return


async def _one_request(
    client: httpx.AsyncClient, url: str, rng: random.Random, n: int, result: SoakResult
) -> None:
    request_id = f"soak-{n}-{rng.randrange(1 << 30)}"
    body = {
        "messages": [{"role": "user", "content": f"tell me about item {n}"}],
        "max_tokens": rng.randint(20, 120),
    }
    tracker = _Tracker()
    cancel = rng.random() < 0.1
    result.requests += 1
    drop = rng.randint(1, 25) if rng.random() < 0.5 else None
    if rng.random() < 0.5:
        first = {"type": "speculate", "request_id": request_id, **body}
        await _ws_read(url, first, tracker, result, drop, request_id if cancel else None)
    else:
        started = await client.post(
            f"{url}/v1/speculate", json=body, headers={"Prefer": "respond-async"}
        )
        request_id = started.json()["request_id"]
        if cancel:
            await client.delete(f"{url}/v1/requests/{request_id}")
        await _sse_read(client, url, request_id, tracker, result, drop)
    for _ in range(MAX_RESUMES):  # dropped: come back over either transport
        if tracker.final is not None:
            break
        result.disconnects += 1
        result.resumes += 1
        again = rng.randint(1, 25) if rng.random() < 0.3 else None
        if rng.random() < 0.5:
            first = {"type": "resume", "request_id": request_id, "after": tracker.last_seq}
            await _ws_read(url, first, tracker, result, again, None)
        else:
            await _sse_read(client, url, request_id, tracker, result, again)
    else:
        raise TimeoutError(f"{request_id} did not end after {MAX_RESUMES} resumes")
    if isinstance(tracker.final, Done):
        result.completed += 1
        server = (await client.get(f"{url}/v1/requests/{request_id}")).json()
        if server["text"] != tracker.final.text:
            result.mismatched_texts += 1
    elif isinstance(tracker.final, Error) and tracker.final.code == "cancelled":
        result.cancelled += 1
    else:
        result.errors += 1
        kind = f"final event {tracker.final.code if isinstance(tracker.final, Error) else '?'}"
        result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1


async def _client(
    url: str, seed: int, requests: int, deadline: float, result: SoakResult, counter: list[int]
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(requests):
            if time.monotonic() > deadline:
                return
            counter[0] += 1
            try:
                await _one_request(client, url, rng, counter[0], result)
            except (httpx.HTTPError, websockets.WebSocketException, OSError, TimeoutError) as exc:
                result.errors += 1  # counted, not fatal: the soak goes on
                kind = f"{type(exc).__name__}: {exc}"[:120]
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1


def run_soak(
    *,
    clients: int,
    requests: int,
    minutes: float,
    url: str | None = None,
    seed: int = 1,
    quiet: bool = False,
) -> SoakResult:
    """Run the soak; with no ``url``, against an in-process server on fake backends."""
    from speculate.bench.fake import FakeBackend
    from speculate.bench.inprocess import serving
    from speculate.engine.context import Backends

    result = SoakResult()
    process = psutil.Process()

    async def main(url: str) -> None:
        counter = [0]
        warm = SoakResult()
        async with httpx.AsyncClient(timeout=30) as client:  # warm up before measuring
            await _one_request(client, url, random.Random(0), 0, warm)
        rss0, fds0 = process.memory_info().rss, process.num_fds()
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for i in range(clients):
                group.start_soon(
                    _client, url, seed + i, requests, started + minutes * 60, result, counter
                )
        result.seconds = round(time.monotonic() - started, 2)
        result.rss_growth_mb = round((process.memory_info().rss - rss0) / 2**20, 2)
        result.fd_growth = process.num_fds() - fds0

    if url is not None:
        anyio.run(main, url)
    else:
        backends = Backends(
            edge=FakeBackend("fake-edge", 400, 1), cloud=FakeBackend("fake-cloud", 800, 2)
        )
        with serving(backends) as local:
            anyio.run(main, local)
    if not quiet:
        table = Table(title=f"soak: {clients} clients × {requests} requests, ≤ {minutes:g} min")
        table.add_column("measure")
        table.add_column("value", justify="right")
        for key, value in asdict(result).items():
            table.add_row(key, str(value))
        Console().print(table)
    return result
