"""Runs queued refinements when the cloud is back, and keeps the answer cache.

Implements the orchestrator's ``Offline`` protocol over the SQLite queue and cache.
At start-up, pending refinements (and recently finished ones) are brought back into
the request registry, so ``GET /v1/requests/{id}`` and resuming work across a restart.
The worker waits for the circuit to close, then asks the cloud for each pending
refinement in turn, oldest first, and appends the result to the request's stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from speculate.backends.base import CloudBackend, GenerationParams, texts
from speculate.core.chat import Message
from speculate.core.protocol import Event
from speculate.core.refine import abandoned, refined
from speculate.engine.cloud_health import CloudHealth
from speculate.engine.eventlog import RequestRegistry
from speculate.errors import CloudError
from speculate.policy.privacy import restore
from speculate.settings import Settings
from speculate.storage.answer_cache import AnswerCache
from speculate.storage.refinement_queue import QueuedRefinement, RefinementQueue

log = logging.getLogger("speculate.engine.refiner")

MAX_ATTEMPTS = 5  # non-transient failures before a refinement is given up
FINISHED_KEPT_S = 7 * 24 * 3600.0  # finished refinements are kept this long for resuming
T = TypeVar("T")


class Refiner:
    def __init__(
        self,
        settings: Settings,
        queue: RefinementQueue,
        cache: AnswerCache | None,
        cloud: CloudBackend | None,
        health: CloudHealth,
        registry: RequestRegistry,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.cache = cache
        self.cloud = cloud
        self.health = health
        self.registry = registry
        self._lock = anyio.Lock()  # one SQLite connection: one statement at a time
        self._wake = anyio.Event()
        self._pending = False  # something may wait in the queue: only then look

    async def _db(self, call: Callable[..., T], *args: Any) -> T:
        """Run a store call on a worker thread, one at a time."""
        async with self._lock:
            return await anyio.to_thread.run_sync(call, *args)

    # -- the orchestrator's Offline protocol ---------------------------------------
    async def enqueue(self, request_id: str, job: dict[str, Any], events: list[Event]) -> bool:
        stored = await self._db(self.queue.put, request_id, job, events)
        if stored:
            self._pending = True
            self._wake.set()
        return stored

    async def cached(self, messages: list[Message], variant: str) -> str | None:
        if self.cache is None:
            return None
        return await self._db(self.cache.get, messages, variant)

    async def remember(self, messages: list[Message], variant: str, text: str) -> None:
        if self.cache is not None:
            await self._db(self.cache.put, messages, variant, text)

    # -- the worker ------------------------------------------------------------------
    async def restore(self) -> int:
        """Bring stored requests back into the registry; how many are pending.  Finished
        rows older than a week are dropped first."""
        await self._db(self.queue.prune, FINISHED_KEPT_S)
        rows = await self._db(self.queue.recent, self.settings.server.retain_finished)
        for row in rows:
            self.registry.restore(row.request_id, row.all_events)
        pending = sum(1 for row in rows if row.status == "pending")
        self._pending = pending > 0
        if pending:
            log.info("%d queued refinement(s) waiting for the cloud", pending)
        return pending

    async def run(self) -> None:
        poll_s = self.settings.store.queue_poll_s
        while True:
            if self._pending:  # retry now and then while the cloud stays away
                with anyio.move_on_after(poll_s):
                    await self._wake.wait()
            else:  # nothing queued: sleep until something is
                await self._wake.wait()
            self._wake = anyio.Event()
            if self.cloud is None or not await self.health.wait_until_up(poll_s):
                continue
            await self.drain()

    async def drain(self) -> None:
        """Refine every pending row while the cloud keeps answering."""
        while self.health.view == "up":
            rows = await self._db(self.queue.pending, 20)
            if not rows:
                self._pending = False
                return
            for row in rows:
                if not await self.refine(row):
                    return

    async def refine(self, row: QueuedRefinement) -> bool:
        """Run one refinement; False when the cloud failed (stop for now)."""
        job = row.job
        try:
            text = await self.ask_cloud(job)
        except CloudError as exc:
            self.health.failed(exc)
            attempts = await self._db(self.queue.failed_attempt, row.request_id, exc.code)
            log.warning(
                "refinement of %s failed (%s), attempt %d", row.request_id, exc.code, attempts
            )
            if not exc.transient and attempts >= MAX_ATTEMPTS:
                message = f"the queued refinement failed {attempts} times ({exc.code})"
                await self._finish(row, abandoned(row.events, exc.code, message), "abandoned")
            return False
        self.health.succeeded()
        if await self._finish(row, refined(row.events, text), "done"):
            raw, key = job.get("raw_messages"), job.get("variant")
            if job.get("cacheable") and raw and key:
                await self.remember(raw, key, text)
        return True

    async def _finish(self, row: QueuedRefinement, final: list[Event], status: str) -> bool:
        applied = await self._db(self.queue.complete, row.request_id, final, status)
        if applied:
            self.registry.restore(row.request_id, row.events).extend(final)
            log.info(
                "queued request %s %s",
                row.request_id,
                "refined by the cloud" if status == "done" else "given up",
            )
        return applied

    async def ask_cloud(self, job: dict[str, Any]) -> str:
        assert self.cloud is not None
        params = GenerationParams(
            max_tokens=int(job["max_tokens"]), temperature=float(job["temperature"])
        )
        async with self.cloud.stream(job["messages"], params) as tokens:
            answer = "".join([text async for text in texts(tokens)])
        return restore(answer, job.get("originals") or {})

    async def counts(self) -> dict[str, int]:
        counts = await self._db(self.queue.counts)
        if self.cache is not None:
            counts["cached_answers"] = await self._db(self.cache.size)
        return counts

    def close(self) -> None:
        self.queue.close()
        if self.cache is not None:
            self.cache.close()
