"""Per-request event logs: the producer appends, any number of readers follow.

The orchestrator never waits for a client: it appends to the log and moves on.
Each transport (SSE, WebSocket, a resumed connection) follows the log from the
``seq`` it already has, so a reader that reconnects gets every event exactly once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from speculate.core.protocol import Event, StreamEnd
from speculate.core.summary import RunSummary, summarize


class _Wakeup:
    """The readers waiting for a log's next events.

    On asyncio (the server's loop) each waiting reader awaits a bare future of its own: an
    ``anyio.Event`` per wait costs a backend lookup, an ``asyncio.Event`` and its future,
    about a sixth of a streamed event's CPU.  Elsewhere (trio) it is ``anyio.Event``."""

    __slots__ = ("_event", "_futures")

    def __init__(self) -> None:
        self._futures: list[asyncio.Future[None]] = []
        self._event: anyio.Event | None = None

    def wait(self) -> Awaitable[object]:
        """What to await until :meth:`set` (not a coroutine: one call less per wake)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._event is None:
                self._event = anyio.Event()
            return self._event.wait()
        future = loop.create_future()  # its own: a cancelled reader cancels only it
        self._futures.append(future)
        return future

    def set(self) -> None:
        if self._futures:
            futures, self._futures = self._futures, []
            for future in futures:
                if not future.done():
                    future.set_result(None)
        if self._event is not None:
            self._event.set()
            self._event = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class EventLog:
    def __init__(
        self, request_id: str, on_finish: Callable[[EventLog], None] | None = None
    ) -> None:
        self.request_id = request_id
        self.events: list[Event] = []
        self.finished = False
        self.awaiting_refinement = False  # ended with queued + a provisional done
        self._end = StreamEnd()
        self._ends: list[int] = []  # where a done or a fatal error is, in ``events``
        self._on_finish = on_finish
        # Readers wake once per batch of events, and nothing is done while none waits.
        self._changed = _Wakeup()
        # What to await until the next events arrive (a reader that takes them itself).
        self.changed: Callable[[], Awaitable[object]] = self._changed.wait
        self.underway = False  # the producer's first request has left for its model
        self._went = _Wakeup()

    def extend(self, events: list[Event]) -> None:
        if not events:
            return
        first = len(self.events)
        self.events.extend(events)
        for at, event in enumerate(events, first):
            end = self._end.see(event)
            if end is not None:
                self._ends.append(at)
            self.awaiting_refinement = end == "provisional"  # until the next event
            if end == "final" and not self.finished:
                self.finished = True
                self.mark_underway()  # (or never will be)
                if self._on_finish is not None:
                    self._on_finish(self)
        self._changed.set()

    def mark_underway(self) -> None:
        """The producer has sent its first request off (the cloud's is written, the
        edge's prompt is with its model); idempotent."""
        if not self.underway:
            self.underway = True
            self._went.set()

    async def wait_underway(self, within: float) -> None:
        """Until :meth:`mark_underway` (at once if it has been), at most ``within`` seconds.

        The bound is a loop timer that resolves the wait, not a cancel scope: a request's
        response waits here once, and a scope's set-up and delivery cost more than the
        rest of the wait."""
        if self.underway:
            return
        went = self._went.wait()
        if not isinstance(went, asyncio.Future):  # (not on asyncio)
            with anyio.move_on_after(within):
                await went
            return
        timer = asyncio.get_running_loop().call_later(within, _resolve, went)
        try:
            await went
        finally:
            timer.cancel()

    def summary(self) -> RunSummary:
        """What the request came to so far (read off its events)."""
        return summarize(self.request_id, self.events)

    def take(self, after: int, *, through_refinement: bool = False) -> tuple[list[Event], bool]:
        """A reader's next batch, now: the events with ``seq > after`` that have arrived,
        cut at the stream's next ``done`` (or fatal error) unless ``through_refinement``
        (go on past a provisional ``done`` to the queued refinement's final one), and
        whether the reader's stream is over with them."""
        events = self.events
        if after >= len(events):
            return [], self.finished
        if not through_refinement:
            for at in self._ends:  # (found as the events came)
                if at >= after:
                    return events[after : at + 1], True
        return events[after:], self.finished

    async def batches(
        self, after: int = 0, *, through_refinement: bool = False
    ) -> AsyncIterator[list[Event]]:
        """Every event with ``seq > after``, live, in batches of what has arrived by the
        time the reader asks (so a transport can write them in one go), until the
        stream's next ``done`` (or fatal error), as :meth:`take` cuts them."""
        sent = max(0, after)
        while True:
            batch, over = self.take(sent, through_refinement=through_refinement)
            if batch:
                sent += len(batch)
                yield batch
            if over:
                return
            if sent == len(self.events):
                await self._changed.wait()

    async def follow(
        self, after: int = 0, *, through_refinement: bool = False
    ) -> AsyncIterator[Event]:
        """:meth:`batches`, one event at a time."""
        async for batch in self.batches(after, through_refinement=through_refinement):
            for event in batch:
                yield event


class RequestRegistry:
    """The event logs of live requests and the most recent finished ones."""

    def __init__(self, keep_finished: int = 1000) -> None:
        self._logs: OrderedDict[str, EventLog] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()  # in the order they finished
        self._keep = keep_finished

    def create(self, request_id: str) -> EventLog:
        log = EventLog(request_id, self._log_finished)
        self._logs[request_id] = log
        return log

    def restore(self, request_id: str, events: list[Event]) -> EventLog:
        """Bring back a stored stream (a queued request, after a restart)."""
        log = self._logs.get(request_id)
        if log is None:
            log = self.create(request_id)
        if not log.events:
            log.extend(events)
        return log

    def get(self, request_id: str) -> EventLog | None:
        return self._logs.get(request_id)

    def _log_finished(self, log: EventLog) -> None:
        """Forget the requests that finished longest ago, beyond ``keep_finished``."""
        self._finished[log.request_id] = None
        while len(self._finished) > self._keep:
            oldest, _ = self._finished.popitem(last=False)
            self._logs.pop(oldest, None)
