"""One running request: the edge and cloud sides in one task group, feeding a Session.

Besides pumping tokens, a run carries out the router's decision as the answer
unfolds: an unsure edge draft brings the cloud in mid-stream, personal data is
replaced by placeholders on the way out and put back on the way in, a transient
cloud failure falls back to the edge and queues the refinement (stored durably
*before* the client hears ``queued``), and a finished cloud answer is cached.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from functools import partial
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from speculate.backends.base import GenerationParams, TokenStream, follow, texts, until_stop
from speculate.core.chat import Message
from speculate.core.protocol import Event, Queued
from speculate.core.refine import abandoned
from speculate.core.request import SpeculateRequest
from speculate.core.session import Session
from speculate.engine.context import RunContext, StopReason
from speculate.engine.eventlog import EventLog
from speculate.engine.verify_run import VerifyRun
from speculate.errors import SpeculateError, speculate_error_in
from speculate.policy.privacy import Restorer, redact
from speculate.policy.router import Decision

log = logging.getLogger("speculate.engine.orchestrator")

Side = Callable[[], Coroutine[Any, Any, None]]


class RequestRun:
    def __init__(
        self,
        context: RunContext,
        request: SpeculateRequest,
        decision: Decision,
        session: Session,
        events: EventLog,
        stop: StopReason,
    ) -> None:
        self.context = context
        self.stop = stop
        self.backends = context.backends
        self.request = request
        self.decision = decision
        self.session = session
        self.events = events
        self.group: TaskGroup | None = None  # where sides are spawned, if any can be
        self.scope: anyio.CancelScope | None = None  # cancelled, it stops every side
        self.held: list[Event] = []  # queued + provisional done, until stored
        self.cloud_messages: list[Message] = request.cloud_messages
        self.originals: dict[str, str] = {}
        if decision.redact:
            redaction = redact(context.guard, request.cloud_messages)
            self.cloud_messages, self.originals = redaction.messages, redaction.originals
        self.cloud_started = False
        self.edge_started = False
        self.edge_scope: anyio.CancelScope | None = None  # to stop the edge alone
        self.sides_running = 0

    def emit(self, events: list[Event], *, side_ends: bool = False) -> None:
        """Append ``events``; once the session is finished, stop whatever still runs.

        ``side_ends``: the caller is a side's own task, at its end, so if no other side
        runs there is nothing to cancel (a cancel scope's ``cancel()`` and the delivery of
        the cancellation are a real share of a short request's cost)."""
        for index, event in enumerate(events):
            if isinstance(event, Queued):  # hold the end back until it is stored
                self.held, events = events[index:], events[:index]
                break
        self.events.extend(events)
        if self.session.finished and self.scope is not None:
            if not side_ends or self.sides_running > 1:
                self.scope.cancel()
        elif self.session.edge_overtaken and self.edge_scope is not None:
            self.edge_scope.cancel()  # the cloud has passed the draft: spare the device

    def params(self, side: Literal["edge", "cloud"]) -> GenerationParams:
        params = self.context.edge_params if side == "edge" else self.context.cloud_params
        changes: dict[str, Any] = {"on_sent": self.events.mark_underway}
        if side == "edge" and self.may_escalate:  # measure the draft's confidence
            changes["confidence_tokens"] = self.context.confidence_tokens
        return replace(params, **changes)

    @property
    def may_escalate(self) -> bool:
        return (
            self.decision.escalate
            and self.context.escalate
            and self.backends.cloud is not None
            and self.session.route == "edge"
        )

    async def execute(self, cached: str | None = None) -> None:
        start = self.session.start()
        if cached is not None:
            self.emit(start)
            self.emit(self.session.answer_from_cache(cached, time.perf_counter()))
            return
        if self.session.route == "verify":  # its rounds start with the edge, right here
            self.events.mark_underway()
        try:
            if self.only_the_edge_runs:
                # No side can join it: a scope to stop it is all the run needs (a task
                # group's exit takes a turn of the loop even when it has no tasks).
                with anyio.CancelScope() as self.scope:
                    await self.run_sides(start)
            else:
                async with anyio.create_task_group() as group:
                    self.group, self.scope = group, group.cancel_scope
                    await self.run_sides(start)
        except Exception as exc:
            self.group = self.scope = None
            self.fail(exc)
        finally:
            self.group = self.scope = None
            if self.held:
                with anyio.CancelScope(shield=True):
                    await self.store_queued()
            elif not self.session.finished:
                # Cancelled from outside: client gone, cancel message or shutdown.
                self.emit(self.session.cancel(self.stop.code, self.stop.message, self.stop.source))

    @property
    def only_the_edge_runs(self) -> bool:
        """The edge answers alone and nothing can bring the cloud in mid-stream."""
        session = self.session
        return (
            session.route == "edge"
            and session.edge == "running"
            and session.cloud_state != "running"
            and not self.may_escalate
        )

    async def run_sides(self, start: list[Event]) -> None:
        first = self.start_sides(first_here=True)
        self.emit(start)
        if first is not None:
            await first()

    def fail(self, exc: Exception) -> None:
        """End the stream on ``exc``: a side's error as itself, a bug as an internal error
        whose details go only to the log.  (Its fatal event cancels the run.)"""
        known = speculate_error_in(exc)  # a side's error that a task group wrapped
        if known is None:
            log.exception("request %s failed", self.request.request_id, exc_info=exc)
            known = SpeculateError("internal error; the server log has the details")
        self.emit(self.session.fail(known))

    def start_sides(self, *, first_here: bool = False) -> Side | None:
        """Start whichever side the session now needs (a route can change mid-stream).

        ``first_here``: the first side is not spawned but given back for the run's own
        task to drive (the others are spawned), so a request's first token waits for no
        task switch; a side that joins later is always spawned."""
        sides: list[Side] = []
        if self.session.route == "verify":
            if not self.edge_started:  # one task drives both sides, in rounds
                self.edge_started = self.cloud_started = True
                sides.append(self.verify_run().execute)
        else:
            if self.session.edge == "running" and not self.edge_started:
                self.edge_started = True
                sides.append(self.edge_side)
            if self.session.cloud_state == "running" and not self.cloud_started:
                self.cloud_started = True
                sides.append(self.cloud_side)
        self.sides_running += len(sides)
        here = sides.pop(0) if first_here and sides else None
        for side in sides:
            assert self.group is not None, "a side joined a run that has no task group"
            self.group.start_soon(self.counted, side, name="request side")
        return None if here is None else partial(self.counted, here)

    async def counted(self, side: Side) -> None:
        """Run a side, counted in ``sides_running`` (by :meth:`start_sides`) until it ends."""
        try:
            await side()
        finally:
            self.sides_running -= 1

    def verify_run(self) -> VerifyRun:
        """Verify mode's rounds, given exactly what they need."""
        return VerifyRun(
            self.session,
            self.context,
            messages=self.request.edge_messages,
            cloud_messages=self.cloud_messages,
            edge_params=self.params("edge"),
            emit=self.emit,
        )

    async def store_queued(self) -> None:
        offline, held, self.held = self.context.offline, self.held, []
        cloud = self.params("cloud")
        job = {
            "messages": self.cloud_messages,
            "originals": self.originals,
            "max_tokens": cloud.max_tokens,
            "temperature": cloud.temperature,
            "cacheable": not self.decision.private_kinds,
            "raw_messages": None if self.decision.private_kinds else self.request.messages,
            "variant": self.context.answer_variant,
        }
        stored = False
        if offline is not None:
            try:
                stored = await offline.enqueue(
                    self.request.request_id, job, self.events.events + held
                )
            except Exception:
                log.exception("could not queue the refinement of %s", self.request.request_id)
        self.events.extend(held)
        if not stored:
            message = "the refinement could not be queued; the draft stands"
            self.events.extend(abandoned(self.events.events, "queue_full", message))

    def judge(self, tokens: TokenStream) -> bool | None:
        """Once enough draft tokens are in, escalate an unsure draft or stop holding back:
        None until then, True if the cloud must now be brought in, False if not."""
        judged, limit = self.context.confidence_tokens, self.context.max_entropy
        entropy: list[float] = tokens.usage.extra.get("entropy", [])
        if len(entropy) < judged:
            return None
        mean = statistics.fmean(entropy[:judged])
        self.session.stats["draft_entropy"] = round(mean, 3)
        self.emit(self.session.flush(time.perf_counter()))  # show all that was judged
        if mean > limit:
            self.emit(self.session.escalate(f"draft entropy {mean:.2f} > {limit}"))
            return True
        self.emit(self.session.settle())
        return False

    async def edge_side(self) -> None:
        if self.session.route == "edge" and not self.may_escalate:
            await self.edge_answer()  # no cloud can come to overtake it: no scope to stop it
            return
        with anyio.CancelScope() as scope:
            self.edge_scope = scope
            await self.edge_answer()
        self.edge_scope = None
        if scope.cancelled_caught:  # stopped for the cloud: it may be asked to go on
            self.edge_started = False

    async def edge_answer(self) -> None:
        session = self.session
        # After a stop for the cloud (which then failed), the edge goes on from its draft.
        prefix = session.draft or None
        try:
            params = self.params("edge")
            async with self.backends.edge.stream(self.request.edge_messages, params, prefix) as raw:
                self.events.mark_underway()  # the prompt is with the model
                tokens = until_stop(raw, params.stop)
                draft = _DraftFeed(self, tokens, judging=self.may_escalate)
                await draft.follow_to_end()
            if not session.stats["prompt_tokens"]:
                session.stats["prompt_tokens"] = tokens.usage.prompt_tokens
            session.stats["edge_cached_tokens"] = tokens.usage.cached_tokens
            session.stats["edge_queue_ms"] = tokens.usage.queue_ms
            session.stats["edge_finish"] = tokens.usage.finish_reason
            if draft.judging:
                self.emit(session.settle())  # a short answer: nothing to judge it by
            self.emit(session.edge_finished(time.perf_counter()), side_ends=True)
        except SpeculateError as exc:
            self.emit(session.edge_failed(exc, time.perf_counter()), side_ends=True)

    async def cloud_side(self) -> None:
        cloud, session, health = self.backends.cloud, self.session, self.context.health
        assert cloud is not None
        restorer = Restorer(self.originals) if self.originals else None
        try:
            params = self.params("cloud")
            async with cloud.stream(self.cloud_messages, params) as raw:
                self.events.mark_underway()  # (if the backend did not say so sooner)
                tokens = until_stop(raw, params.stop)
                async for text in texts(tokens):
                    if restorer is not None:
                        text = restorer.feed(text)
                    self.emit(session.receive_cloud(text, time.perf_counter()))
                if restorer is not None:
                    self.emit(session.receive_cloud(restorer.finish(), time.perf_counter()))
                if tokens.usage.prompt_tokens:
                    session.stats["prompt_tokens"] = tokens.usage.prompt_tokens
                if health is not None:
                    health.succeeded()
                session.stats["cloud_finish"] = tokens.usage.finish_reason
                # Finish before closing the response: the correction goes out at once.
                self.emit(
                    session.cloud_finished(
                        time.perf_counter(),
                        completion_tokens=tokens.usage.completion_tokens or None,
                        tool_calls=tokens.usage.tool_calls,
                    ),
                    side_ends=True,  # (what is left, closing and caching, is shielded)
                )
        except SpeculateError as exc:
            if health is not None:
                health.failed(exc)
            self.emit(session.cloud_failed(exc, time.perf_counter()), side_ends=True)
            # A cloud-only request falls back to the edge; an edge stopped for the cloud
            # goes on.
            self.start_sides()
            return
        await self.remember(session.cloud if session.cloud_state == "done" else None)

    async def remember(self, text: str | None) -> None:
        offline, cloud = self.context.offline, self.backends.cloud
        if text is None or offline is None or cloud is None or self.decision.private_kinds:
            return
        with anyio.CancelScope(shield=True):
            try:
                variant = self.context.answer_variant
                await offline.remember(self.request.messages, variant, text)
            except Exception:
                log.exception("could not cache the answer of %s", self.request.request_id)


class _DraftFeed:
    """The edge's pieces into the session, given each on the event loop as it arrives:
    shown at once or coalesced (a timer then shows what waits), the first ones judged
    when the draft may be escalated."""

    def __init__(self, run: RequestRun, tokens: TokenStream, *, judging: bool) -> None:
        self.run, self.tokens, self.judging = run, tokens, judging
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    async def follow_to_end(self) -> None:
        """Follow the edge to its end.  The pieces come to :meth:`piece` on the loop as
        they arrive; this task wakes only when the feed pauses to bring the cloud in (which
        needs a task to start it), and at the end."""
        try:
            while not await follow(self.tokens, self.piece):
                self.run.start_sides()
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def piece(self, text: str) -> bool:
        """Take one piece; True pauses the following: the cloud must be brought in, which
        takes the run's task."""
        run, session = self.run, self.run.session
        run.emit(session.receive_draft(text, time.perf_counter()))
        escalate = False
        if self.judging:
            verdict = run.judge(self.tokens)
            self.judging = verdict is None
            escalate = bool(verdict)
        if self._timer is None:
            flush_at = session.next_flush_at
            if flush_at is not None:
                self._arm(flush_at)
        return escalate

    def _arm(self, flush_at: float) -> None:
        self._timer = self._loop.call_later(flush_at - time.perf_counter(), self._flush)

    def _flush(self) -> None:
        """What waits goes out when no further piece has brought it along."""
        self._timer = None
        run, session = self.run, self.run.session
        flush_at = session.next_flush_at
        if flush_at is None:
            return  # a later piece showed it
        now = time.perf_counter()
        if now < flush_at:  # a piece flushed since and left more waiting
            self._arm(flush_at)
            return
        try:
            run.emit(session.flush(now))
        except Exception as exc:  # a bug, in a loop callback: the stream still ends on it
            run.fail(exc)
