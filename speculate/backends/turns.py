"""Turns on one model, shared fairly between clients.

One llama.cpp context serves every request, one at a time.  First come, first served
lets one client's backlog put everyone else's request behind it; instead the turns go
round the clients (each client's own requests in their order), so a client waits for at
most one turn of each other client.  A turn is short: a request that has held the model
for a time slice while another client waits gives way (and later continues from where it
stopped, see :class:`~speculate.backends.llamacpp.LlamaCppEdge`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

import anyio

__all__ = ["FairTurns"]


@dataclass(eq=False)
class _Waiter:
    client: str
    granted: bool = False
    event: anyio.Event = field(default_factory=anyio.Event)


class FairTurns:
    def __init__(self) -> None:
        self.holder: str | None = None
        # Clients in the order their next turn comes: the one served longest ago first.
        self._queues: OrderedDict[str, deque[_Waiter]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def busy(self) -> bool:
        return self.holder is not None or self.waiting > 0

    def others_waiting(self, client: str) -> bool:
        """Is anyone but ``client`` waiting?  (Read from the decoding thread: a snapshot.)"""
        return any(queue and name != client for name, queue in list(self._queues.items()))

    async def acquire(self, client: str) -> None:
        if self.holder is None and not self.waiting:
            self._grant(client)
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
        self.holder = None
        for client in list(self._queues):
            queue = self._queues[client]
            if not queue:
                del self._queues[client]
                continue
            waiter = queue.popleft()
            waiter.granted = True
            self._grant(client)
            waiter.event.set()
            return

    def _grant(self, client: str) -> None:
        self.holder = client
        # Served now: its next turn comes after every other client's.
        queue = self._queues.pop(client, deque())
        self._queues[client] = queue
