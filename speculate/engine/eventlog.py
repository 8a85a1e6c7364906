"""Per-request event logs: the producer appends, any number of readers follow.

The orchestrator never waits for a client: it appends to the log and moves on.
Each transport (SSE, WebSocket, a resumed connection) follows the log from the
``seq`` it already has, so a reader that reconnects gets every event exactly once.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import AsyncIterator

import anyio

from speculate.core.protocol import Event, StreamEnd, ends
from speculate.core.summary import RunSummary, summarize

_FINISH_CLOCK = itertools.count(1)


class EventLog:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.events: list[Event] = []
        self.finished = False
        self.finished_order = 0  # when it finished, relative to the other logs
        self.awaiting_refinement = False  # ended with queued + a provisional done
        self._end = StreamEnd()
        self._changed = anyio.Event()

    def extend(self, events: list[Event]) -> None:
        if not events:
            return
        self.events.extend(events)
        for event in events:
            end = self._end.see(event)
            self.awaiting_refinement = end == "provisional"  # until the next event
            if end == "final":
                self.finished = True
                self.finished_order = next(_FINISH_CLOCK)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def summary(self) -> RunSummary:
        """What the request came to so far (read off its events)."""
        return summarize(self.request_id, self.events)

    async def follow(
        self, after: int = 0, *, through_refinement: bool = False
    ) -> AsyncIterator[Event]:
        """Every event with ``seq > after``, live, until the stream's next ``done`` (or
        fatal error).  ``through_refinement``: go on past a provisional ``done`` until
        the queued refinement's final one (a WebSocket client stays for it)."""
        sent = max(0, after)
        while True:
            while sent < len(self.events):
                sent += 1
                event = self.events[sent - 1]
                yield event
                if ends(event) and not through_refinement:
                    return
            if self.finished:
                return
            await self._changed.wait()


class RequestRegistry:
    """The event logs of live requests and the most recent finished ones."""

    def __init__(self, keep_finished: int = 1000) -> None:
        self._logs: OrderedDict[str, EventLog] = OrderedDict()
        self._keep = keep_finished

    def create(self, request_id: str) -> EventLog:
        log = EventLog(request_id)
        self._logs[request_id] = log
        self._evict()
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

    def _evict(self) -> None:
        """Forget the requests that finished longest ago, beyond ``keep_finished``."""
        finished = [log for log in self._logs.values() if log.finished]
        if len(finished) <= self._keep:
            return
        finished.sort(key=lambda log: log.finished_order)
        for log in finished[: len(finished) - self._keep]:
            del self._logs[log.request_id]
