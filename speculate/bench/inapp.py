"""The app's own CPU per event and per request, with no socket and no client process.

``python -m speculate.bench.inapp`` drives the ASGI app directly (fake models, the SSE
route, a ``send`` that only counts) so that what is measured is speculate's Python and
nothing of uvicorn's or the load client's: ``--tokens 1`` against ``--tokens 40`` splits
the request's fixed cost from the per-event cost, and ``--baseline`` runs the capacity
suite's minimal app in the same harness.  ``--primitives`` times what the request path is
made of: the pure work of a draft event (session, log, encoding), an anyio task spawn, a
thread hand-off (and one whose thread needs the GIL while the loop runs 2 ms of Python,
with CPython's GIL switch interval and with the server's), a token queued from a thread
onto the loop (the thread asleep after it, or still running Python),
one event through an event log to a waiting reader.  ``--stages`` cuts every draft token
short after the model, the session or the log, to show what each step adds per token.

A tool for profiling, not a suite: the capacity suite measures the server as users run
it.  Under ``cProfile`` (deterministic; it inflates every call alike) or ``py-spy
--nonblocking``: py-spy's default sampling, which stops the process for each sample, put
a fifth of this harness's samples in ``asyncio.current_task``, a 0.2 µs call (it asks the
kernel for the process id); sampled without stopping it, that call all but vanished.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from speculate.bench.baseline import baseline_app
from speculate.bench.fake import FakeBackend
from speculate.bench.inprocess import quiet_settings
from speculate.core.protocol import Done, Draft, encode_sse
from speculate.core.session import Session
from speculate.engine import request_run
from speculate.engine.context import Backends
from speculate.engine.eventlog import EventLog
from speculate.server import create_app
from speculate.server.run import GIL_SWITCH_INTERVAL_S, settle_heap

Message = dict[str, Any]


async def _lifespan(app: Any) -> tuple[asyncio.Queue[Message], asyncio.Task[None]]:
    messages: asyncio.Queue[Message] = asyncio.Queue()
    started = asyncio.Event()
    await messages.put({"type": "lifespan.startup"})

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    task = asyncio.ensure_future(app({"type": "lifespan"}, messages.get, send))
    await started.wait()
    return messages, task


async def post(app: Any, path: str, body: bytes, seen: Callable[[Message], None]) -> None:
    """One JSON ``POST`` to ``path`` run through the ASGI app to the end of its answer,
    every message the app sends shown to ``seen``; the client stays until then."""
    finished, delivered = asyncio.Event(), False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        seen(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            finished.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)


async def _one(app: Any, body: bytes, counter: list[int]) -> None:
    """One ``POST /v1/speculate`` read to its end, its events counted."""

    def count(message: Message) -> None:
        if message["type"] == "http.response.body":
            counter[0] += message.get("body", b"").count(b"\n\n")

    await post(app, "/v1/speculate", body, count)


async def streams(
    count: int,
    tokens: int,
    tps: float,
    rounds: int,
    *,
    baseline: bool = False,
    count_python_calls: bool = False,
) -> dict[str, float]:
    """``count`` concurrent streams of ``tokens`` fake tokens, ``rounds`` times; medians
    of the rounds after the first.  ``baseline``: the capacity suite's minimal app
    (:mod:`speculate.bench.baseline`) in the same harness, the floor to compare with.
    ``count_python_calls``: one more round, under a profile hook that counts the calls
    made per event (its CPU time is not one of the medians)."""
    settings = quiet_settings()
    limits = settings.server
    limits.max_concurrent_streams = limits.max_streams_per_client = count * 2
    limits.max_connections = count * 2
    backends = Backends(
        edge=FakeBackend("fake-edge", tps, 1), cloud=FakeBackend("fake-cloud", tps * 2, 2)
    )
    app = baseline_app(tps, tokens) if baseline else create_app(settings, backends)
    lifespan, task = await _lifespan(app)
    settle_heap()  # as the server does once it has started
    body = json.dumps(
        {"messages": [{"role": "user", "content": "go"}], "mode": "edge", "max_tokens": tokens}
    ).encode()
    per_event, per_request = [], []
    calls = {"call": 0, "c_call": 0}

    def count_calls(frame: Any, kind: str, arg: Any) -> None:
        if kind in calls:
            calls[kind] += 1

    for index in range(rounds):
        counter = [0]
        counting = count_python_calls and index == rounds - 1  # after the others' warm-up
        # (Set only for the counted round: under cProfile the hook in place is its own,
        # which sys.setprofile cannot put back.)
        hook = sys.getprofile()
        if counting:
            sys.setprofile(count_calls)
        try:
            cpu = time.process_time()
            await asyncio.gather(*(_one(app, body, counter) for _ in range(count)))
            cpu = time.process_time() - cpu
        finally:
            if counting:
                sys.setprofile(hook)
        if not counting:
            per_event.append(cpu / counter[0] * 1e6)
            per_request.append(cpu / count * 1e6)
    await lifespan.put({"type": "lifespan.shutdown"})
    await task
    result = {
        "events_per_stream": counter[0] / count,
        "cpu_us_per_event": round(statistics.median(per_event[1:] or per_event), 1),
        "cpu_us_per_request": round(statistics.median(per_request[1:] or per_request)),
    }
    if count_python_calls:
        # Python frames entered (a coroutine's every resumption counts) and calls into C,
        # per event: the same on every machine, where CPU time moves by a tenth a run.
        result["python_calls_per_event"] = round(calls["call"] / counter[0], 1)
        result["c_calls_per_event"] = round(calls["c_call"] / counter[0], 1)
    return result


# How far each edge token goes in :func:`stages`, in the order it goes there.
STAGES = ("model", "session", "log", "all")


@contextmanager
def _draft_cut(stage: str) -> Iterator[None]:
    """While the block runs, each draft token of a run stops after ``stage``: "model" (the
    token is dropped as it arrives), "session" (the session takes it, its events are
    dropped), "log" (they are appended to the log without waking its reader, which writes
    them with the last event), "all" (as the server runs).  A diagnostic that patches the
    run's draft listener, not a way the server can run."""
    feed = request_run._DraftFeed
    kept = feed.piece

    def dropped(self: Any, text: str) -> bool:
        return False

    def to_session(self: Any, text: str) -> bool:
        self.run.session.receive_draft(text, time.perf_counter())
        return False

    def to_log(self: Any, text: str) -> bool:
        self.run.events.events.extend(self.run.session.receive_draft(text, time.perf_counter()))
        return False

    cut = {"model": dropped, "session": to_session, "log": to_log, "all": kept}[stage]
    feed.piece = cut  # type: ignore[method-assign]
    try:
        yield
    finally:
        feed.piece = kept  # type: ignore[method-assign]


async def stages(count: int, tokens: int, tps: float, repeat: int = 3) -> dict[str, Any]:
    """Where a streamed token's CPU goes: :func:`streams` with each token cut after each of
    :data:`STAGES` in turn (``repeat`` times, the stages alternating), the medians per
    request, and each stage's cost per token over the one before it."""
    per_request: dict[str, list[float]] = {stage: [] for stage in STAGES}
    written: dict[str, float] = {}
    for _ in range(repeat):
        for stage in STAGES:
            with _draft_cut(stage):
                measured = await streams(count, tokens, tps, 2)
            per_request[stage].append(measured["cpu_us_per_request"])
            written[stage] = measured["events_per_stream"]
    medians = {stage: statistics.median(runs) for stage, runs in per_request.items()}
    steps = itertools.pairwise(STAGES)
    return {
        "cpu_us_per_request": {stage: round(value) for stage, value in medians.items()},
        "runs": per_request,
        "events_written_per_stream": written,
        "us_per_token_over_the_stage_before": {
            later: round((medians[later] - medians[earlier]) / tokens, 1)
            for earlier, later in steps
        },
    }


async def primitives(samples: int = 2000) -> dict[str, float]:
    """Microseconds for the pieces a request's path is made of."""

    async def nothing() -> None:
        pass

    started = time.perf_counter()
    for _ in range(samples // 10):
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(nothing)
    spawn = (time.perf_counter() - started) / samples * 1e6

    handoffs = []
    for _ in range(samples // 10):
        before = time.perf_counter()
        inside = await anyio.to_thread.run_sync(time.perf_counter)
        handoffs.append((inside - before) * 1e6)
    # The loop goes on with 2 ms of Python after handing work over: how long the thread
    # waits for the GIL, with CPython's switch interval and with the server's.
    behind_busy_loop: dict[str, list[float]] = {"default": [], "served": []}
    default_interval = sys.getswitchinterval()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        for interval, waits in zip(
            (default_interval, GIL_SWITCH_INTERVAL_S), behind_busy_loop.values(), strict=True
        ):
            sys.setswitchinterval(interval)
            for _ in range(samples // 40):
                before = time.perf_counter()
                began = pool.submit(time.perf_counter)
                while time.perf_counter() < before + 0.002:
                    pass
                waits.append((began.result() - before) * 1e6)
    sys.setswitchinterval(default_interval)
    # The other way, as a token goes: the thread queues it onto the loop, then sleeps (a
    # decoding thread inside llama.cpp) or runs 0.2 ms of Python first (one still inside
    # llama-cpp-python's own code between two tokens), with the server's switch interval.
    loop = asyncio.get_running_loop()
    to_loop: dict[str, list[float]] = {"sleeping": [], "busy": []}
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        for busy_s, waits in ((0.0, to_loop["sleeping"]), (0.0002, to_loop["busy"])):
            for _ in range(samples // 40):
                arrived: asyncio.Future[float] = loop.create_future()

                def hand_over(busy_s: float = busy_s, arrived: Any = arrived) -> float:
                    sent = time.perf_counter()
                    loop.call_soon_threadsafe(arrived.set_result, sent)
                    while time.perf_counter() < sent + busy_s:
                        pass
                    time.sleep(0.002)
                    return sent

                done = loop.run_in_executor(pool, hand_over)
                sent = await arrived
                waits.append((time.perf_counter() - sent) * 1e6)
                await done
    sys.setswitchinterval(default_interval)

    log = EventLog("r")
    drafts = [Draft(request_id="r", seq=i + 1, text=" w") for i in range(samples)]

    async def reader() -> None:
        async for batch in log.batches():
            b"".join(map(encode_sse, batch))

    async def producer() -> None:
        for draft in drafts:
            log.extend([draft])
            await anyio.lowlevel.checkpoint()
        log.extend([Done(request_id="r", seq=samples + 1, text="", final_source="edge")])

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        group.start_soon(producer)
    through_log = (time.perf_counter() - started) / samples * 1e6
    started = time.perf_counter()
    for draft in drafts:
        encode_sse(draft)
        await anyio.lowlevel.checkpoint()
    one_task = (time.perf_counter() - started) / samples * 1e6
    # The pure work of one draft event, apart: the session's bookkeeping, the log, encoding.
    session = Session("p", route="edge", reason="bench", edge_model="fake", cloud_model=None)
    session.start()
    started, made = time.perf_counter(), []
    for index in range(samples):
        made.append(session.receive_draft(" word", 0.02 * index))  # 20 ms apart: each shown
    receive_draft = (time.perf_counter() - started) / samples * 1e6
    pure_log = EventLog("p")
    started = time.perf_counter()
    for events in made:
        pure_log.extend(events)
    extend = (time.perf_counter() - started) / samples * 1e6
    started = time.perf_counter()
    for events in made:
        b"".join(map(encode_sse, events))
    encode = (time.perf_counter() - started) / samples * 1e6
    return {
        "session_receive_draft_us": round(receive_draft, 2),
        "log_extend_us": round(extend, 2),
        "encode_sse_us": round(encode, 2),
        "anyio_task_spawn_us": round(spawn, 1),
        "thread_handoff_us_p50": round(statistics.median(handoffs), 1),
        "thread_start_behind_2ms_of_loop_python_us_p50": round(
            statistics.median(behind_busy_loop["default"]), 1
        ),
        "same_with_the_servers_gil_switch_interval_us_p50": round(
            statistics.median(behind_busy_loop["served"]), 1
        ),
        "token_to_loop_thread_sleeping_us_p50": round(statistics.median(to_loop["sleeping"]), 1),
        "token_to_loop_thread_in_python_us_p50": round(statistics.median(to_loop["busy"]), 1),
        "event_through_log_to_reader_us": round(through_log, 1),
        "same_event_in_one_task_us": round(one_task, 1),
    }


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on uvloop where it builds, as uvicorn runs the app."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def calls_per_event(count: int = 200, tokens: int = 40, tps: float = 10.0) -> dict[str, float]:
    """Python and C calls per SSE event of speculate and of the capacity suite's minimal
    app, ``count`` streams of ``tokens`` fake tokens each (one counted round after one to
    warm up): the per-event work as a count, the same on every machine."""
    result: dict[str, float] = {"streams": count, "tokens": tokens}
    for name, baseline in (("speculate", False), ("baseline", True)):
        measured = run_loop(
            streams(count, tokens, tps, 2, baseline=baseline, count_python_calls=True)
        )
        result[f"{name}_python_calls_per_event"] = measured["python_calls_per_event"]
        result[f"{name}_c_calls_per_event"] = measured["c_calls_per_event"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--tps", type=float, default=50.0, help="fake tokens per second")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--primitives", action="store_true")
    parser.add_argument(
        "--stages",
        type=int,
        metavar="REPEAT",
        help="where a token's CPU goes: each token cut after the model, the session, the log "
        "or nothing, REPEAT times alternating (medians per request)",
    )
    parser.add_argument(
        "--baseline", action="store_true", help="the minimal app of the capacity suite instead"
    )
    parser.add_argument(
        "--calls",
        action="store_true",
        help="also count the Python and C calls per event (one more round, profiled)",
    )
    parser.add_argument(
        "--gc",
        metavar="YOUNG,MIDDLE",
        nargs="?",
        const="",
        help="also time the garbage collector's passes; with YOUNG,MIDDLE: under those "
        "thresholds instead of the server's",
    )
    args = parser.parse_args()
    if args.primitives:
        print(json.dumps(run_loop(primitives())))
        return
    if args.stages:
        print(json.dumps(run_loop(stages(args.streams, args.tokens, args.tps, args.stages))))
        return
    measured = streams(
        args.streams,
        args.tokens,
        args.tps,
        args.rounds + args.calls,
        baseline=args.baseline,
        count_python_calls=args.calls,
    )
    if args.gc is None:
        print(json.dumps(run_loop(measured)))
        return
    collector = _CollectorClock(*map(int, args.gc.split(","))) if args.gc else _CollectorClock()
    with collector:
        cpu = time.process_time()
        result = run_loop(measured)
        cpu = time.process_time() - cpu
    print(json.dumps(result | collector.report(cpu)))


class _CollectorClock:
    """The time of the collector's passes by generation (``gc.callbacks``), with the
    young and middle thresholds set after the server's own set-up where given."""

    def __init__(self, young: int | None = None, middle: int | None = None) -> None:
        self.thresholds = (young, middle)
        self.passes = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._began = 0.0

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()  # (a pass blocks nothing: its wall time)
            young, middle = self.thresholds
            if young is not None and middle is not None:  # (after settle_heap's own)
                gc.set_threshold(young, middle, gc.get_threshold()[2])
        else:
            self.passes[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self._began

    def __enter__(self) -> _CollectorClock:
        gc.callbacks.append(self._tick)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._tick)

    def report(self, cpu_s: float) -> dict[str, object]:
        return {
            "gc_thresholds": list(gc.get_threshold()),
            "gc_passes": self.passes,
            "gc_ms": [round(s * 1000, 1) for s in self.seconds],
            "gc_share_of_cpu": round(sum(self.seconds) / cpu_s, 3),
        }


if __name__ == "__main__":
    main()
