"""Requests that may outlive the connection that started them.

WebSocket requests and detached SSE requests (``Prefer: respond-async``) run in the
app's own task group rather than the connection's, so a client whose network drops
can reconnect and ``resume``.  A request nobody follows is cancelled after
``resume_grace_s``: a client that went away for good still stops the models.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from speculate.eventlog import EventLog, RequestRegistry
from speculate.orchestrator import Orchestrator, SpeculateRequest


@dataclass(eq=False)
class _Job:
    log: EventLog
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    followers: int = 0
    generation: int = 0  # bumped whenever the number of readers changes
    changed: anyio.Event = field(default_factory=anyio.Event)

    def touch(self) -> None:
        self.generation += 1
        changed, self.changed = self.changed, anyio.Event()
        changed.set()


class Jobs:
    def __init__(
        self, orchestrator: Orchestrator, registry: RequestRegistry, resume_grace_s: float
    ) -> None:
        self.orchestrator = orchestrator
        self.registry = registry
        self.resume_grace_s = resume_grace_s
        self._group: TaskGroup | None = None
        self._running: dict[str, _Job] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the task group that detached requests run in (the app's lifespan)."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                self._group = None

    def start(self, request: SpeculateRequest) -> EventLog:
        if self._group is None:
            raise RuntimeError("Jobs.start() outside Jobs.running()")
        job = _Job(self.registry.create(request.request_id))
        self._running[request.request_id] = job
        self._group.start_soon(self._run, request, job)
        self._group.start_soon(self._reap, job)
        return job.log

    def is_running(self, request_id: str) -> bool:
        return request_id in self._running

    def cancel(self, request_id: str) -> bool:
        job = self._running.get(request_id)
        if job is None or job.log.finished:
            return False
        job.scope.cancel()
        return True

    @asynccontextmanager
    async def following(self, request_id: str) -> AsyncIterator[None]:
        """Count a reader of the request while the block runs (a finished one is fine)."""
        job = self._running.get(request_id)
        if job is None:
            yield
            return
        job.followers += 1
        job.touch()
        try:
            yield
        finally:
            job.followers -= 1
            job.touch()
            if job.followers == 0 and not job.log.finished and self._group is not None:
                self._group.start_soon(self._reap, job)

    async def _run(self, request: SpeculateRequest, job: _Job) -> None:
        try:
            with job.scope:
                await self.orchestrator.run(request, job.log)
        finally:
            self._running.pop(request.request_id, None)
            job.touch()

    async def _reap(self, job: _Job) -> None:
        """Cancel the job if it stays without readers for the whole grace period."""
        generation = job.generation
        with anyio.move_on_after(self.resume_grace_s):
            while job.generation == generation and not job.log.finished:
                await job.changed.wait()
            return  # a reader came (or went: that starts a fresh reaper), or it ended
        if job.followers == 0:
            job.scope.cancel()
