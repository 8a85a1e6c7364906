"""Verify mode, end to end for one request: the edge drafts, the cloud checks.

The edge drafts without pause (the client sees its tokens as draft) while checks go to the
cloud one after the other, each with everything drafted since the last. The accepted part
is committed and the cloud's correction replaces the rest; the edge then drafts on from the
corrected text (llama.cpp reuses the cached prefix), or, when the cloud decodes faster than
the edge's accepted tokens arrive, the cloud continues to the end. At temperature 0 the
text is the cloud's own greedy answer throughout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from speculate.backends.base import GenerationParams, ScoringCloud, texts
from speculate.core.chat import Message
from speculate.core.protocol import Event
from speculate.core.session import Session
from speculate.core.verify import Scored, Verdict, judge
from speculate.core.verify_session import VerifySession
from speculate.engine.context import RunContext
from speculate.errors import SpeculateError


def _after(scored: Scored, verified: int) -> Scored:
    """Only the tokens past the already verified text (positions made relative to it)."""
    tokens = tuple(
        replace(token, start=token.start - verified)
        for token in scored.tokens
        if token.end > verified
    )
    return replace(scored, tokens=tokens)


class VerifyRun:
    def __init__(
        self,
        session: Session,
        context: RunContext,
        *,
        messages: list[Message],
        cloud_messages: list[Message],
        edge_params: GenerationParams,
        emit: Callable[[list[Event]], None],
    ) -> None:
        """``messages`` go to the edge, ``cloud_messages`` (redacted if need be) to the
        cloud; ``emit`` hands the session's events to the request's event log."""
        self.session = cast(VerifySession, session)
        self.edge = context.backends.edge
        self.cloud = cast(ScoringCloud, context.backends.cloud)
        self.planner = context.planner
        self.health = context.health
        self.messages, self.cloud_messages = messages, cloud_messages
        self.edge_params, self.cloud_params = edge_params, context.cloud_params
        self.emit = emit
        self.budget = self.cloud_params.max_tokens
        self.used = 0  # cloud tokens in the answer so far
        self.verified = 0  # characters of the answer the cloud vouched for (committed)
        # The edge's current run of drafting ("lineage": it restarts after a correction),
        # how many tokens it made and how many of them went to the cloud.
        self.lineage = 0
        self.drafting: anyio.CancelScope | None = None
        self.drafted = self.sent = 0
        self.edge_ended = self.sent_complete = False
        self.cloud_error: SpeculateError | None = None
        stats = self.session.stats
        for key in (
            "accepted_tokens",
            "rejected_tokens",
            "cloud_prefill_tokens",
            "cloud_decode_tokens",
            "verify_round_trips",
            "verify_wait_ms",
        ):
            stats[key] = 0
        stats["verify_strategy"] = "edge"

    async def execute(self) -> None:
        session = self.session
        try:
            handover = await self.edge_and_cloud_in_step()
            if self.cloud_error is not None:
                raise self.cloud_error
            if handover is not None and not session.finished:
                session.stats["verify_strategy"] = "cloud"
                await self.cloud_continues()
        except SpeculateError as exc:
            if exc.source != "cloud":
                raise
            self.fail_over(exc)
            await self.edge_finishes()

    async def edge_and_cloud_in_step(self) -> str | None:
        """The edge drafts without pause while its draft goes to the cloud for checking,
        one check at a time: as soon as a verdict is in, the next check goes out with
        everything drafted meanwhile (so a check's round trip hides behind the drafting,
        and the last one covers only the last few tokens). Several in flight measured
        slower: the cloud evaluates them one after the other anyway. Returns why the cloud
        should go on by itself, or None when the answer is finished."""
        send, inbox = anyio.create_memory_object_stream[tuple[Any, ...]](math.inf)
        checking = False
        async with anyio.create_task_group() as group:

            def restart_drafting() -> None:
                if self.drafting is not None:
                    self.drafting.cancel()
                self.lineage += 1
                self.drafted = self.sent = 0
                self.edge_ended = self.sent_complete = False
                scope = anyio.CancelScope()
                self.drafting = scope
                group.start_soon(self.draft, scope, self.lineage, send.clone())

            async def check(snapshot: str, complete: bool) -> None:
                started = time.perf_counter()
                try:
                    scored = await self.cloud.score(self.cloud_messages, snapshot)
                except SpeculateError as exc:
                    await send.send(("failed", exc))
                    return
                await send.send(("scored", complete, scored, started))

            restart_drafting()
            while True:
                message = await inbox.receive()
                if message[0] == "failed":  # raised by execute, outside the task group
                    self.cloud_error = message[1]
                    group.cancel_scope.cancel()
                    return None
                if message[0] == "edge_failed":
                    self.emit(self.session.edge_failed(message[1], time.perf_counter()))
                    group.cancel_scope.cancel()
                    return "the edge failed"
                if message[0] == "scored":
                    checking = False
                    _, complete, scored, started = message
                    verdict = self.apply(scored, complete, started)
                    if verdict.ended or self.used >= self.budget:
                        now = time.perf_counter()
                        final = self.verified + (len(verdict.correction) if verdict.ended else 0)
                        self.emit(self.session.verdict(final, "", now))
                        self.emit(self.session.verify_finished(now))
                        group.cancel_scope.cancel()
                        return None
                    if verdict.resync or (complete and not verdict.held):
                        # The joined text left the cloud's token path, or the edge thinks
                        # the answer is over while the cloud does not: only its own
                        # decoding is greedy from here.
                        group.cancel_scope.cancel()
                        return "resync" if verdict.resync else "the edge ended"
                    if verdict.rejected_tokens:
                        if self.planner.strategy() == "cloud":
                            group.cancel_scope.cancel()
                            return "the cloud decodes faster"
                        restart_drafting()  # from the corrected text
                # Send the draft for checking once enough is new, or all of it at the end.
                new = self.drafted - self.sent
                last = self.edge_ended and (new > 0 or not self.sent_complete)
                if not checking and (new >= self.planner.min_block or last):
                    checking = True
                    self.sent, self.sent_complete = self.drafted, self.edge_ended
                    self.emit(self.session.flush(time.perf_counter()))
                    group.start_soon(check, self.session.draft, self.edge_ended)
        raise AssertionError("the loop ends only by returning")  # pragma: no cover

    async def draft(
        self, scope: anyio.CancelScope, lineage: int, send: MemoryObjectSendStream[tuple[Any, ...]]
    ) -> None:
        """The edge drafts on from the draft so far, telling the loop of every token, until
        the budget, its end of answer or a correction (which cancels ``scope``)."""
        with scope, send:
            room = self.budget - self.used
            params = replace(self.edge_params, max_tokens=max(1, room), temperature=0.0)
            started = time.perf_counter()
            try:
                async with self.edge.stream(self.messages, params, self.session.draft) as tokens:
                    async for text in texts(tokens):
                        if lineage != self.lineage:
                            return
                        self.drafted += 1
                        self.emit(self.session.receive_draft(text, time.perf_counter()))
                        await send.send(("drafted",))
            except SpeculateError as exc:
                if exc.source != "edge":
                    raise
                await send.send(("edge_failed", exc))
                return
            if lineage == self.lineage:
                self.planner.saw_edge(self.drafted, time.perf_counter() - started)
                self.edge_ended = True  # its answer ended, or the budget is drafted
                await send.send(("drafted",))

    def apply(self, scored: Scored, complete: bool, started: float) -> Verdict:
        """Judge a check past the verified text; commit what the cloud accepts."""
        session = self.session
        self.cloud_answered()
        verdict = judge(_after(scored, self.verified), self.budget - self.used, complete=complete)
        waited = time.perf_counter() - started
        self.planner.saw_verdict(verdict, waited)
        stats = session.stats
        stats["verify_wait_ms"] = round(stats["verify_wait_ms"] + waited * 1000, 3)
        stats["verify_round_trips"] += 1
        stats["cloud_prefill_tokens"] += scored.prompt_tokens
        stats["accepted_tokens"] += verdict.accepted_tokens
        stats["rejected_tokens"] += verdict.rejected_tokens
        stats["cloud_decode_tokens"] += verdict.correction_tokens
        if verdict.margin is not None:
            stats["closest_margin"] = min(stats.get("closest_margin", 99.0), verdict.margin)
        # A correction is the cloud's next token, but it is only verified (and counted
        # against the budget) once judged with the text after it, in a later check.
        self.used += verdict.accepted_tokens
        stats["cloud_tokens"] = self.used + verdict.correction_tokens
        accepted = self.verified + verdict.accepted_chars
        if verdict.held:  # the unjudged tail stays shown as draft
            self.emit(session.hold(accepted))
        else:
            self.emit(session.verdict(accepted, verdict.correction, time.perf_counter()))
        self.verified = accepted
        return verdict

    async def cloud_continues(self) -> None:
        session = self.session
        # From the verified text only: what follows it is the cloud's own from here on.
        self.emit(session.verdict(self.verified, "", time.perf_counter()))
        params = replace(self.cloud_params, max_tokens=self.budget - self.used, temperature=0.0)
        started, count = time.perf_counter(), 0
        async with self.cloud.continue_from(self.cloud_messages, session.draft, params) as tokens:
            async for text in texts(tokens):
                count += 1
                self.emit(session.receive_continuation(text, time.perf_counter()))
        self.cloud_answered()
        decoded = tokens.usage.completion_tokens or count
        self.planner.saw_cloud(decoded, time.perf_counter() - started)
        session.stats["cloud_decode_tokens"] += decoded
        self.used += decoded
        session.stats["cloud_tokens"] = self.used
        if tokens.usage.prompt_tokens:
            session.stats["cloud_prefill_tokens"] += tokens.usage.prompt_tokens
        self.emit(session.verify_finished(time.perf_counter()))

    def cloud_answered(self) -> None:
        """Tell the circuit breaker, as a speculative request does when its cloud ends."""
        if self.health is not None:
            self.health.succeeded()

    def fail_over(self, exc: SpeculateError) -> None:
        if self.health is not None:
            self.health.failed(exc)
        self.emit(self.session.cloud_failed(exc, time.perf_counter()))

    async def edge_finishes(self) -> None:
        """The cloud is gone: the edge drafts the rest, and its text stands."""
        session = self.session
        async with self.edge.stream(self.messages, self.edge_params, session.draft) as tokens:
            async for text in texts(tokens):
                self.emit(session.receive_draft(text, time.perf_counter()))
        self.emit(session.edge_finished(time.perf_counter()))
