"""Verify mode, end to end for one request: the edge drafts a block, the cloud checks it.

Each round the edge drafts a block of tokens from the verified text (llama.cpp reuses
the cached prefix), the client sees them as draft, and one request asks the cloud to
score them.  The accepted part and the cloud's correction are committed.  After a
correction the planner picks who goes on: the edge drafts again, or, when the cloud
decodes faster than the edge's accepted tokens arrive, the cloud simply continues to
the end.  At temperature 0 the text is the cloud's own greedy answer throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import anyio

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
        stats = self.session.stats
        for key in ("accepted_tokens", "rejected_tokens", "cloud_prefill_tokens",
                    "cloud_decode_tokens", "verify_round_trips", "verify_wait_ms"):  # fmt: skip
            stats[key] = 0
        stats["verify_strategy"] = "edge"

    async def execute(self) -> None:
        session = self.session
        try:
            strategy = "edge"
            unchecked, edge_ended = 0, False  # draft tokens not yet sent to the cloud
            while not session.finished:
                if strategy == "cloud":
                    await self.cloud_continues()
                    return
                try:
                    if not unchecked:
                        unchecked, edge_ended = await self.draft_block()
                    verdict, unchecked, ahead_ended = await self.check_while_drafting(
                        complete=edge_ended
                    )
                except SpeculateError as exc:
                    if exc.source != "edge":
                        raise
                    self.emit(session.edge_failed(exc, time.perf_counter()))
                    strategy = "cloud"  # the cloud finishes from the verified text
                    continue
                if verdict.ended or self.used >= self.budget:
                    # The answer ends at the verified text (and the cloud's last token, when
                    # the budget ended it there); an unjudged draft tail is not the cloud's.
                    now = time.perf_counter()
                    final = self.verified + (len(verdict.correction) if verdict.ended else 0)
                    self.emit(session.verdict(final, "", now))
                    self.emit(session.verify_finished(now))
                    return
                if edge_ended or verdict.resync:
                    # The edge thinks it is over while the cloud does not; or the joined
                    # text left the cloud's token path: only its own decoding is greedy.
                    strategy = "cloud"
                elif verdict.rejected_tokens:
                    strategy = self.planner.strategy()
                    unchecked = 0  # what was drafted ahead followed the rejected text
                else:
                    edge_ended = ahead_ended
                session.stats["verify_strategy"] = strategy
        except SpeculateError as exc:
            if exc.source != "cloud":
                raise
            self.fail_over(exc)
            await self.edge_finishes()

    async def check_while_drafting(self, *, complete: bool) -> tuple[Verdict, int, bool]:
        """Send the draft for checking and let the edge draft on while the check is in
        flight (two devices working at once); the drafting stops when the verdict is
        in. Returns the verdict and how many tokens were drafted meanwhile (they follow
        the checked text, so they count only if it was accepted) and whether the edge
        ended its answer among them."""
        ahead = [0, False]

        async def draft_ahead() -> None:
            # As far as the planner allows: the edge should never wait for the cloud.
            # (Drafting only what the edge writes during twice the expected wait measured
            # slower: 1.21x and 1.48x cloud-only at 0 and 100 ms, against 1.12-1.16x and
            # 1.29-1.33x so.)
            ahead[0], ahead[1] = await self.draft_block(self.planner.max_block, counter=ahead)

        async with anyio.create_task_group() as group:
            if not complete:
                group.start_soon(draft_ahead)
            verdict = await self.check(complete=complete)
            group.cancel_scope.cancel()
        self.emit(self.session.flush(time.perf_counter()))
        return verdict, int(ahead[0]), bool(ahead[1])

    async def draft_block(
        self, size: int | None = None, counter: list[Any] | None = None
    ) -> tuple[int, bool]:
        """The edge drafts the next block after the draft so far (shown as draft); how
        many tokens, and whether the edge ended its answer before the block was full.
        ``counter[0]`` follows the count as it grows (the block may be cancelled)."""
        session = self.session
        block = max(1, min(size or self.planner.block(), self.budget - self.used))
        params = replace(self.edge_params, max_tokens=block, temperature=0.0)
        count, started = 0, time.perf_counter()
        async with self.edge.stream(self.messages, params, session.draft) as tokens:
            async for text in texts(tokens):
                count += 1
                if counter is not None:
                    counter[0] = count
                self.emit(session.receive_draft(text, time.perf_counter()))
        self.emit(session.flush(time.perf_counter()))
        self.planner.saw_edge(count, time.perf_counter() - started)
        return count, count < block

    async def check(self, *, complete: bool) -> Verdict:
        """The cloud scores the draft after the verified text; commit what it accepts."""
        session = self.session
        verified = self.verified
        started = time.perf_counter()
        scored = await self.cloud.score(self.cloud_messages, session.draft)
        self.cloud_answered()
        verdict = judge(_after(scored, verified), self.budget - self.used, complete=complete)
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
        # against the budget) once judged with the text after it, in the next check.
        self.used += verdict.accepted_tokens
        stats["cloud_tokens"] = self.used + verdict.correction_tokens
        accepted = verified + verdict.accepted_chars
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
