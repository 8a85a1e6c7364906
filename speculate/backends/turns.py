"""Turns on one model, shared fairly between clients.

One llama.cpp context serves every request, one at a time.  First come, first served
lets one client's backlog put everyone else's request behind it.  Instead each client
is charged the model time its requests hold (while it has any request going), and the
next turn goes to the waiting client charged least; a holder gives way mid-answer as
soon as a waiting client is behind it by more than a slice (``slice_s``).  So a client
with one ordinary request gets the model almost at once and keeps it to the end, while
two clients that both keep the model busy alternate slice by slice.  Within one client,
its requests keep their order.  The holder continues its answer from its own text on
its next turn (see :class:`~speculate.backends.llamacpp.LlamaCppEdge`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import anyio

__all__ = ["FairTurns"]


@dataclass(eq=False)
class _Waiter:
    client: str
    granted: bool = False
    event: anyio.Event = field(default_factory=anyio.Event)


class FairTurns:
    def __init__(self, slice_s: float = 0.25) -> None:
        self.slice_s = slice_s
        self.holder: str | None = None
        self._held_since = 0.0
        self._queues: dict[str, deque[_Waiter]] = {}
        self._used: dict[str, float] = {}  # model seconds per client with requests going
        self._active: dict[str, int] = {}
        self._served: dict[str, int] = {}  # when each client last got a turn (a counter)
        self._turn_number = 0

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def busy(self) -> bool:
        return self.holder is not None or self.waiting > 0

    def enter(self, client: str) -> None:
        """A request of ``client`` begins (its charge lasts while it has any)."""
        self._active[client] = self._active.get(client, 0) + 1

    def leave(self, client: str) -> None:
        left = self._active.get(client, 1) - 1
        if left > 0:
            self._active[client] = left
        else:
            self._active.pop(client, None)
            self._used.pop(client, None)  # nothing going: it starts afresh next time
            self._served.pop(client, None)

    def should_yield(self, client: str) -> bool:
        """Should the holder give way now?  (Read from the decoding thread: a snapshot.)"""
        held = self._used.get(client, 0.0) + time.monotonic() - self._held_since
        return any(
            queue and name != client and self._used.get(name, 0.0) + self.slice_s < held
            for name, queue in list(self._queues.items())
        )

    def try_acquire(self, client: str) -> bool:
        """Take the model at once if it is free and nobody waits for it."""
        if self.holder is None and not self.waiting:
            self._grant(client)
            return True
        return False

    async def acquire(self, client: str) -> None:
        if self.try_acquire(client):
            return
        waiter = _Waiter(client)
        self._queues.setdefault(client, deque()).append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:  # the turn came as we were cancelled: pass it on
                self.release()
            else:
                self._queues[client].remove(waiter)
            raise

    def release(self) -> None:
        holder, self.holder = self.holder, None
        if holder is not None and holder in self._active:
            self._used[holder] = self._used.get(holder, 0.0) + time.monotonic() - self._held_since
        for client in [c for c, queue in self._queues.items() if not queue]:
            del self._queues[client]
        if not self._queues:
            return
        # The least charged client next; among equals, the one served longest ago.
        client = min(
            self._queues, key=lambda name: (self._used.get(name, 0.0), self._served.get(name, -1))
        )
        waiter = self._queues[client].popleft()
        waiter.granted = True
        self._grant(client)
        waiter.event.set()

    def _grant(self, client: str) -> None:
        self.holder = client
        self._held_since = time.monotonic()
        self._turn_number += 1
        self._served[client] = self._turn_number
        if client not in self._active:
            self._served.pop(client, None)  # (a caller that never entered: nothing to keep)
