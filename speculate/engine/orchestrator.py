"""One request, end to end: edge and cloud concurrently in one anyio task group.

The orchestrator is the thin I/O shell around :class:`~speculate.core.session.Session`:
it pumps tokens from the backends into the session and the session's events into the
request's :class:`~speculate.engine.eventlog.EventLog`.  Whoever settles the answer first
cancels the rest: the cloud's last token cancels the edge, the end of the stream
cancels everything, and cancelling the caller (a client that went away) cancels both.
"""

from __future__ import annotations

import logging
import time
from dataclasses import fields, replace
from typing import Any, Literal

import anyio

from speculate.backends.base import GenerationParams, texts
from speculate.core.chat import Message, as_text
from speculate.core.protocol import Route
from speculate.core.request import SpeculateRequest
from speculate.core.session import Session, SessionConfig
from speculate.core.trim import ConversationFit, Fitted, fit
from speculate.core.verify import Planner
from speculate.core.verify_session import VerifySession
from speculate.engine.context import Backends, Health, Offline, RunContext, RunObserver, StopReason
from speculate.engine.eventlog import EventLog
from speculate.engine.request_run import RequestRun
from speculate.errors import ContextTooLong, SpeculateError
from speculate.policy.cost import prices
from speculate.policy.privacy import PrivacyGuard
from speculate.policy.router import CloudHealth, Decision, Router, RouterConfig
from speculate.settings import Settings
from speculate.storage.answer_cache import variant

__all__ = ["Orchestrator", "router_for"]

log = logging.getLogger("speculate.engine.orchestrator")


def router_for(settings: Settings) -> Router:
    config = settings.router
    return Router(
        RouterConfig(
            edge_max=config.edge_max,
            cloud_min=config.cloud_min,
            momentum_turns=config.momentum_turns,
            prefer_verify=config.prefer_verify,
            privacy_policy=settings.privacy.policy,
        ),
        PrivacyGuard(settings.privacy.patterns, settings.privacy.keywords),
    )


class Orchestrator:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        observers: list[RunObserver] | None = None,
        *,
        health: Health | None = None,
        offline: Offline | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.observers = observers or []
        self.health = health
        self.offline = offline
        self.router = router_for(settings)
        self.planner = Planner()  # verify mode's running estimates, shared by requests
        self._prewarming = False
        price = prices(settings.costs)
        self.session_config = SessionConfig(
            coalesce_s=settings.stream.coalesce_ms / 1000,
            coalesce_chars=settings.stream.coalesce_chars,
            edge_usd_per_mtok=price.edge,
            cloud_usd_per_mtok_in=price.cloud_in,
            cloud_usd_per_mtok_out=price.cloud_out,
        )

    def fit(self, request: SpeculateRequest) -> SpeculateRequest:
        """The request with each side's messages fitted to its model's window (oldest
        turns dropped).  Raises :class:`~speculate.errors.ContextTooLong` (400) when the
        last turn cannot fit a side the request needs; in mode ``auto`` a side that
        cannot hold it is left out instead.  Runs before anything streams."""
        if request.fit is not None:
            return request
        backends, messages = self.backends, request.messages
        max_tokens = request.max_tokens or self.settings.edge.max_tokens
        fitted: dict[str, Fitted] = {}
        refused: dict[str, ContextTooLong] = {}
        sides = {"edge": backends.edge_window}
        if backends.cloud is not None:
            sides["cloud"] = backends.cloud_window
        for side, window in sides.items():
            # The edge runs no tools: it reads tool calls and results as text.
            told = as_text(messages) if side == "edge" else messages
            if window is None:
                fitted[side] = Fitted(told, 0, 0)
                continue
            try:
                fitted[side] = fit(told, window, max_tokens)
            except ContextTooLong as exc:
                refused[side] = exc
        mode, note = request.mode, ""
        needs = {
            "edge": ("edge",),
            "cloud": ("cloud",),
            "speculative": ("edge", "cloud"),
            "verify": ("edge", "cloud"),
            "auto": tuple(fitted) if fitted else ("edge",),
        }[mode]
        for side in needs:
            if side in refused:
                raise refused[side]
        if mode == "auto" and refused:
            mode = "edge" if "edge" in fitted else "cloud"
            note = f"the conversation does not fit the {next(iter(refused))} model's window"
        edge = fitted.get("edge", Fitted(as_text(messages), 0, 0))
        cloud = fitted.get("cloud", Fitted(messages, 0, 0))
        conversation = ConversationFit(
            edge=edge.messages,
            cloud=cloud.messages,
            dropped_turns={"edge": edge.dropped_turns, "cloud": cloud.dropped_turns},
            note=note,
        )
        return replace(request, mode=mode, fit=conversation)

    async def prewarm(self, messages: list[Message]) -> dict[str, str]:
        """Send a conversation ahead while its next turn is being typed: the edge
        evaluates its prompt, the cloud's prefix cache takes it in (a one-token request,
        only if ``cloud.prewarm``, the cloud is up and nothing private is in it).  One
        at a time; each side says ``warmed``, ``busy``, ``skipped`` or ``failed``."""
        result = {"edge": "busy", "cloud": "busy"}
        if self._prewarming:
            return result
        self._prewarming = True
        try:
            request = self.fit(SpeculateRequest(messages=messages, max_tokens=1))
        except ContextTooLong:
            self._prewarming = False
            return {"edge": "skipped", "cloud": "skipped"}

        async def edge() -> None:
            warmed = await self.backends.edge.prewarm(request.edge_messages)
            result["edge"] = "warmed" if warmed else "busy"

        async def cloud() -> None:
            cloud = self.backends.cloud
            decision = self.decide(request)
            if (
                cloud is None
                or not self.settings.cloud.prewarm
                or decision.private_kinds
                or (self.health is not None and self.health.view != "up")
            ):
                result["cloud"] = "skipped"
                return
            try:
                async with cloud.stream(request.cloud_messages, GenerationParams(1, 0.0)) as t:
                    async for _ in texts(t):
                        pass
            except SpeculateError as exc:
                log.warning("prewarm: the cloud failed (%s): %s", exc.code, exc.message)
                result["cloud"] = "failed"
            else:
                result["cloud"] = "warmed"

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(edge)
                group.start_soon(cloud)
        finally:
            self._prewarming = False
        return result

    def decide(self, request: SpeculateRequest) -> Decision:
        cloud: CloudHealth = "none"
        if self.backends.cloud is not None:
            cloud = self.health.view if self.health is not None else "up"
        can_verify = getattr(self.backends.cloud, "scoring", None) is not None
        # Verify builds its answer from rounds of draft and continuation; a stop sequence
        # across their seams would be missed.
        blocked = "stop sequences are asked" if request.sampling.stop else ""
        return self.router.decide(
            request.mode,
            request.messages,
            cloud,
            can_verify=can_verify,
            verify_blocked=blocked,
            needs_cloud=request.needs_cloud,
        )

    def generation_params(
        self, request: SpeculateRequest, side: Literal["edge", "cloud"]
    ) -> GenerationParams:
        """What a side is asked for: the request's own values over the configured ones."""
        edge, cloud = self.settings.edge, self.settings.cloud
        max_tokens = request.max_tokens or edge.max_tokens
        asked, sampling = request.temperature, request.sampling
        common: dict[str, Any] = {
            "top_k": sampling.top_k,
            "min_p": sampling.min_p,
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
            "stop": sampling.stop,
            "response_format": sampling.response_format,
        }
        if side == "edge":
            return GenerationParams(
                max_tokens,
                edge.temperature if asked is None else asked,
                top_p=edge.top_p if sampling.top_p is None else sampling.top_p,
                seed=edge.seed if sampling.seed is None else sampling.seed,
                client=request.client,
                **common,
            )
        return GenerationParams(
            max_tokens,
            cloud.temperature if asked is None else asked,
            top_p=sampling.top_p,
            seed=sampling.seed,
            cloud_fields=request.cloud_fields,
            **common,
        )

    def answer_variant(self, request: SpeculateRequest) -> str:
        """The cloud model and parameters that, with the messages, key the answer cache."""
        cloud, params = self.backends.cloud, self.generation_params(request, "cloud")
        model = cloud.model_name if cloud is not None else ""
        # Shallow (asdict deep-copies, a real share of a short request's cost); the same JSON.
        sampling = {
            f.name: value
            for f in fields(request.sampling)
            if (value := getattr(request.sampling, f.name)) not in (None, ())
        }
        return variant(
            model, params.max_tokens, params.temperature, {**sampling, **request.cloud_fields}
        )

    def context(self, request: SpeculateRequest, backends: Backends | None = None) -> RunContext:
        """What this request's run receives: it never reaches back for anything else."""
        return RunContext(
            backends=backends or self.backends,
            edge_params=self.generation_params(request, "edge"),
            cloud_params=self.generation_params(request, "cloud"),
            answer_variant=self.answer_variant(request),
            guard=self.router.guard,
            planner=self.planner,
            escalate=self.settings.router.escalate,
            confidence_tokens=self.settings.router.confidence_tokens,
            max_entropy=self.settings.router.max_entropy,
            health=self.health,
            offline=self.offline,
        )

    def new_session(
        self,
        request: SpeculateRequest,
        decision: Decision,
        *,
        cached: bool = False,
        backends: Backends | None = None,
    ) -> Session:
        backends = backends or self.backends
        cloud = backends.cloud
        queue = self.offline is not None and self.settings.store.queue and not request.append_only
        route: Route = "cache" if cached else decision.route
        reason = decision.reason
        queue_reason = None
        if cached:
            reason = f"{decision.basis}; the cloud is away: a cached cloud answer"
        elif decision.wants_cloud and decision.route == "edge" and queue:
            queue_reason = "the cloud circuit is open; the refinement is queued"
        if request.fit is not None and request.fit.note:
            reason = f"{reason}; {request.fit.note}"
        escalating = decision.escalate and self.settings.router.escalate and cloud is not None
        kind = VerifySession if route == "verify" else Session
        if route == "verify":  # commits as it goes: a later refinement could not patch it
            queue = False
        return kind(
            request.request_id,
            route=route,
            reason=reason,
            edge_model=backends.edge.model_name,
            edge_model_sha256=backends.edge.model_sha256,
            cloud_model=cloud.model_name if cloud is not None and route != "edge" else None,
            config=self.session_config,
            now=time.perf_counter(),
            commit_progressively=request.append_only,
            queue_reason=queue_reason,
            queue_on_cloud_failure=queue and decision.wants_cloud,
            hold_commits=escalating and request.append_only,
            dropped_turns=None if request.fit is None else request.fit.dropped_turns,
        )

    async def run(
        self, request: SpeculateRequest, events: EventLog, stop: StopReason | None = None
    ) -> None:
        """Run the request to its end, appending every event to ``events``.  If it is
        cancelled from outside, its last event is a fatal error as ``stop`` says."""
        try:
            request = self.fit(request)
        except ContextTooLong as exc:  # callers that did not fit it first hear it here
            session = self.new_session(request, self.decide(request))
            events.extend([*session.start(), *session.fail(exc)])
            return
        decision = self.decide(request)
        cached = None
        cloud = self.backends.cloud
        if (
            decision.wants_cloud
            and decision.route == "edge"
            and not decision.private_kinds
            and self.offline is not None
            and cloud is not None
        ):
            cached = await self.offline.cached(request.messages, self.answer_variant(request))
        # The models as they are now: a request finishes on the edge model it started on,
        # even if another is swapped in meanwhile.
        backends = replace(self.backends)
        session = self.new_session(request, decision, cached=cached is not None, backends=backends)
        run = RequestRun(
            self.context(request, backends),
            request,
            decision,
            session,
            events,
            stop or StopReason(),
        )
        for observer in self.observers:
            observer.started(request)
        try:
            await run.execute(cached)
        finally:
            summary = events.summary()
            with anyio.CancelScope(shield=True):
                for observer in self.observers:
                    try:
                        await observer.finished(request, summary)
                    except Exception:  # bookkeeping must never break an answer
                        log.exception("observer %r failed", observer)
