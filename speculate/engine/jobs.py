"""Every running request, in the app's own task group.

Requests outlive the connection that started them when the client may come back:
WebSocket and detached SSE requests (``Prefer: respond-async``) wait
``resume_grace_s`` for a reader before they are cancelled, so a client whose network
drops can reconnect and ``resume``.  A request tied to its response (plain
``POST /v1/speculate``) is cancelled as soon as its reader leaves.  Shutdown drains:
running requests get a grace period to finish, then end with a fatal
``server_shutdown`` error that their readers still receive.

The grace periods are deadlines that one reaper task keeps for every request, so
starting a request spawns no task beyond its run.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from speculate.core.request import SpeculateRequest
from speculate.engine.context import StopReason
from speculate.engine.eventlog import EventLog, RequestRegistry
from speculate.engine.orchestrator import Orchestrator

# How long a response waits for its request's first step before writing its headers.
FIRST_STEP_WAIT_S = 0.05


@dataclass(eq=False)
class _Job:
    log: EventLog
    grace_s: float
    client: str = ""
    stop: StopReason = field(default_factory=StopReason)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    followers: int = 0
    generation: int = 0  # bumped whenever the number of readers changes

    @property
    def unfollowed_since(self) -> int | None:
        """The generation it has had no reader in, if it has none and still runs."""
        return self.generation if self.followers == 0 and not self.log.finished else None


class Jobs:
    def __init__(
        self,
        orchestrator: Orchestrator,
        registry: RequestRegistry,
        resume_grace_s: float,
        max_running: int = 256,
    ) -> None:
        self.orchestrator = orchestrator
        self.registry = registry
        self.resume_grace_s = resume_grace_s
        self.max_running = max_running
        self._group: TaskGroup | None = None
        self._running: dict[str, _Job] = {}
        self._per_client: Counter[str] = Counter()  # admission asks this per request
        self._idle = anyio.Event()
        self.draining = False
        self._drain_requested = anyio.Event()
        self._drain_grace_s = 0.0
        # (deadline, tie-break, job, generation): cancel the job at the deadline if it
        # has had no reader since that generation.
        self._deadlines: list[tuple[float, int, _Job, int]] = []
        self._ticket = itertools.count()
        self._earlier_deadline = anyio.Event()

    @property
    def running_count(self) -> int:
        return len(self._running)

    def running_for(self, client: str) -> int:
        """How many requests of this client are running."""
        return self._per_client[client]

    @property
    def full(self) -> bool:
        return self.draining or len(self._running) >= self.max_running

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the task group requests run in (for the app's lifespan)."""
        async with anyio.create_task_group() as group:
            self._group = group
            group.start_soon(self._drain_when_asked)
            group.start_soon(self._reap)
            try:
                yield
            finally:
                self._stop_all(StopReason("server_shutdown", "the server stopped", "server"))
                group.cancel_scope.cancel()
                self._group = None

    def start(
        self, request: SpeculateRequest, *, attached: bool = False, start_grace_s: float = 10.0
    ) -> EventLog:
        """Run ``request``.  ``attached``: cancel it the moment its last reader leaves
        (it still gets ``start_grace_s`` to be picked up at all)."""
        if self._group is None:
            raise RuntimeError("Jobs.start() outside Jobs.running()")
        job = _Job(
            self.registry.create(request.request_id),
            0.0 if attached else self.resume_grace_s,
            request.client,
        )
        self._running[request.request_id] = job
        self._per_client[request.client] += 1
        self._group.start_soon(self._run, request, job, name="request run")
        self._reap_after(job, start_grace_s if attached else job.grace_s)
        return job.log

    @staticmethod
    async def first_step(log: EventLog) -> None:
        """Let the request just started send its first request off (the prompt handed to
        the edge model, the cloud request written) before the caller goes on: a
        response's headers, written meanwhile, would slip in between the steps of an HTTP
        client that yields to the loop a few times before it writes, and delay the
        request by their write.  Waits at most ``FIRST_STEP_WAIT_S``: the headers do not
        wait long for a peer that is slow to take a request."""
        await log.wait_underway(within=FIRST_STEP_WAIT_S)

    def cancel(self, request_id: str, reason: StopReason | None = None) -> bool:
        job = self._running.get(request_id)
        if job is None or job.log.finished:
            return False
        if reason is not None:  # the running request holds this very object
            job.stop.code, job.stop.message, job.stop.source = (
                reason.code,
                reason.message,
                reason.source,
            )
        job.scope.cancel()
        return True

    def request_drain(self, grace_s: float) -> None:
        """Ask for :meth:`drain` (from the event loop's thread, e.g. a signal handler
        scheduled with ``call_soon_threadsafe``)."""
        self._drain_grace_s = grace_s
        self._drain_requested.set()

    async def _drain_when_asked(self) -> None:
        await self._drain_requested.wait()
        await self.drain(self._drain_grace_s)

    async def drain(self, grace_s: float) -> None:
        """Refuse new requests, give running ones ``grace_s`` to finish, stop the rest."""
        self.draining = True
        with anyio.move_on_after(grace_s):
            if self._running:
                self._idle = anyio.Event()  # (made here, not for every request started)
                await self._idle.wait()
        self._stop_all(StopReason("server_shutdown", "the server is shutting down", "server"))

    def _stop_all(self, reason: StopReason) -> None:
        for request_id in list(self._running):
            self.cancel(request_id, reason)

    @asynccontextmanager
    async def following(self, request_id: str) -> AsyncIterator[None]:
        """Count a reader of the request while the block runs (a finished one is fine)."""
        job = self._running.get(request_id)
        if job is None:
            yield
            return
        job.followers += 1
        job.generation += 1
        try:
            yield
        finally:
            job.followers -= 1
            job.generation += 1
            if job.unfollowed_since is not None:
                if job.grace_s <= 0:
                    job.scope.cancel()  # tied to its response: no reader, no request
                else:
                    self._reap_after(job, job.grace_s)

    async def _run(self, request: SpeculateRequest, job: _Job) -> None:
        try:
            with job.scope:
                await self.orchestrator.run(request, job.log, job.stop)
        finally:
            job.log.mark_underway()  # nobody waits for a step that will not come
            if self._running.pop(request.request_id, None) is not None:
                self._per_client[request.client] -= 1
                if not self._per_client[request.client]:
                    del self._per_client[request.client]
            job.generation += 1
            if not self._running:
                self._idle.set()

    def _reap_after(self, job: _Job, grace_s: float) -> None:
        """Cancel the job if it stays without readers for the whole grace period."""
        deadline = anyio.current_time() + grace_s
        soonest = self._deadlines[0][0] if self._deadlines else math.inf
        heapq.heappush(self._deadlines, (deadline, next(self._ticket), job, job.generation))
        if deadline < soonest:
            self._earlier_deadline.set()

    async def _reap(self) -> None:
        """Keep every request's deadline: one task, asleep until the soonest is due or
        an earlier one is added."""
        while True:
            soonest = self._deadlines[0][0] if self._deadlines else math.inf
            with anyio.move_on_after(soonest - anyio.current_time()):
                await self._earlier_deadline.wait()
            self._earlier_deadline = anyio.Event()
            now = anyio.current_time()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, job, generation = heapq.heappop(self._deadlines)
                # A reader that came (or came and went: that set a fresh deadline) since
                # the deadline was set spares the job from this one.
                if job.unfollowed_since == generation:
                    job.scope.cancel()
