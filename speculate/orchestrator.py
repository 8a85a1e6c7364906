"""One request, end to end: edge and cloud concurrently in one anyio task group.

The orchestrator is the thin I/O shell around :class:`~speculate.core.session.Session`:
it pumps tokens from the backends into the session and the session's events into the
request's :class:`~speculate.eventlog.EventLog`.  Whoever settles the answer first
cancels the rest: the cloud's last token cancels the edge, the end of the stream
cancels everything, and cancelling the caller (a client that went away) cancels both.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Literal, Protocol

import anyio

from speculate.backends.base import CloudBackend, EdgeBackend, GenerationParams, Message
from speculate.core.protocol import Event, Route
from speculate.core.session import Session, SessionConfig
from speculate.cost import prices
from speculate.errors import SpeculateError
from speculate.eventlog import EventLog, RunSummary, summarize
from speculate.settings import Settings

log = logging.getLogger("speculate.orchestrator")

Mode = Literal["auto", "speculative", "verify", "edge", "cloud"]


@dataclass(frozen=True, slots=True)
class SpeculateRequest:
    messages: list[Message]
    mode: Mode = "auto"
    max_tokens: int | None = None
    temperature: float | None = None
    request_id: str = ""
    append_only: bool = False  # commit text as soon as it is final (OpenAI-style clients)

    @staticmethod
    def new_id() -> str:
        return "req_" + uuid.uuid4().hex


@dataclass(slots=True)
class StopReason:
    """How a request that is cancelled from outside ends (mutable until it happens)."""

    code: str = "cancelled"
    message: str = "cancelled by the client"
    source: Literal["client", "server"] = "client"


class RunObserver(Protocol):
    """Told about every request: metrics, the request log, structured logs."""

    def started(self, request: SpeculateRequest) -> None: ...

    async def finished(self, request: SpeculateRequest, summary: RunSummary) -> None: ...


@dataclass(slots=True)
class Backends:
    edge: EdgeBackend
    cloud: CloudBackend | None = None


def choose_route(mode: Mode, cloud_available: bool) -> tuple[Route, str]:
    """Until the router exists: ``auto`` means speculative whenever a cloud is configured."""
    if mode == "edge":
        return "edge", "requested: edge only"
    if not cloud_available:
        return "edge", "no cloud backend is configured"
    if mode == "cloud":
        return "cloud", "requested: cloud only"
    if mode == "verify":
        return "speculative", "verify is not available yet; speculating instead"
    if mode == "speculative":
        return "speculative", "requested: speculative"
    return "speculative", "auto: edge draft refined by the cloud"


class Orchestrator:
    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        observers: list[RunObserver] | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.observers = observers or []
        price = prices(settings.costs)
        self.session_config = SessionConfig(
            coalesce_s=settings.stream.coalesce_ms / 1000,
            coalesce_chars=settings.stream.coalesce_chars,
            edge_usd_per_mtok=price.edge,
            cloud_usd_per_mtok_in=price.cloud_in,
            cloud_usd_per_mtok_out=price.cloud_out,
        )

    def new_session(self, request: SpeculateRequest) -> Session:
        route, reason = choose_route(request.mode, self.backends.cloud is not None)
        cloud = self.backends.cloud
        return Session(
            request.request_id,
            route=route,
            reason=reason,
            edge_model=self.backends.edge.model_name,
            cloud_model=cloud.model_name if cloud is not None and route != "edge" else None,
            config=self.session_config,
            now=time.perf_counter(),
            commit_progressively=request.append_only,
        )

    async def run(
        self, request: SpeculateRequest, events: EventLog, stop: StopReason | None = None
    ) -> None:
        """Run the request to its end, appending every event to ``events``.  If it is
        cancelled from outside, its last event is a fatal error as ``stop`` says."""
        session = self.new_session(request)
        run = _Run(self, request, session, events, stop or StopReason())
        for observer in self.observers:
            observer.started(request)
        try:
            await run.execute()
        finally:
            summary = summarize(events)
            with anyio.CancelScope(shield=True):
                for observer in self.observers:
                    try:
                        await observer.finished(request, summary)
                    except Exception:  # bookkeeping must never break an answer
                        log.exception("observer %r failed", observer)


class _Run:
    """The state of one running request (kept off the Orchestrator: it is shared)."""

    def __init__(
        self,
        owner: Orchestrator,
        request: SpeculateRequest,
        session: Session,
        events: EventLog,
        stop: StopReason,
    ) -> None:
        self.stop = stop
        self.settings = owner.settings
        self.backends = owner.backends
        self.request = request
        self.session = session
        self.events = events
        self.group_scope: anyio.CancelScope | None = None

    def emit(self, events: list[Event]) -> None:
        self.events.extend(events)
        if self.session.finished and self.group_scope is not None:
            self.group_scope.cancel()

    def params(self, side: Literal["edge", "cloud"]) -> GenerationParams:
        edge, cloud = self.settings.edge, self.settings.cloud
        max_tokens = self.request.max_tokens or edge.max_tokens
        temperature = self.request.temperature
        if side == "edge":
            return GenerationParams(
                max_tokens=max_tokens,
                temperature=edge.temperature if temperature is None else temperature,
                top_p=edge.top_p,
                seed=edge.seed,
            )
        return GenerationParams(
            max_tokens=max_tokens,
            temperature=cloud.temperature if temperature is None else temperature,
        )

    async def execute(self) -> None:
        self.emit(self.session.start())
        try:
            async with anyio.create_task_group() as group:
                self.group_scope = group.cancel_scope
                if self.session.edge == "running":
                    group.start_soon(self.edge_side)
                if self.session.cloud_state == "running":
                    group.start_soon(self.cloud_side)
        except Exception as exc:  # a bug, not a backend failure: end the stream cleanly
            log.exception("request %s failed", self.request.request_id)
            self.emit(self.session.fail(SpeculateError(f"internal error: {exc!r}")))
        finally:
            if not self.session.finished:
                # Cancelled from outside: client gone, cancel message or shutdown.
                self.emit(self.session.cancel(self.stop.code, self.stop.message, self.stop.source))

    async def edge_side(self) -> None:
        session = self.session
        try:
            async with self.backends.edge.stream(
                self.request.messages, self.params("edge")
            ) as tokens:
                session.stats["edge_queue_ms"] = tokens.usage.queue_ms
                while True:
                    flush_at = session.next_flush_at
                    if flush_at is None:
                        try:
                            text = await tokens.receive()
                        except anyio.EndOfStream:
                            break
                    else:
                        with anyio.move_on_after(flush_at - time.perf_counter()) as wait:
                            try:
                                text = await tokens.receive()
                            except anyio.EndOfStream:
                                break
                        if wait.cancelled_caught:
                            self.emit(session.flush(time.perf_counter()))
                            continue
                    self.emit(session.receive_draft(text, time.perf_counter()))
            if not session.stats["prompt_tokens"]:
                session.stats["prompt_tokens"] = tokens.usage.prompt_tokens
            self.emit(session.edge_finished(time.perf_counter()))
        except SpeculateError as exc:
            self.emit(session.edge_failed(exc, time.perf_counter()))

    async def cloud_side(self) -> None:
        cloud, session = self.backends.cloud, self.session
        assert cloud is not None
        try:
            async with cloud.stream(self.request.messages, self.params("cloud")) as tokens:
                while True:
                    try:
                        text = await tokens.receive()
                    except anyio.EndOfStream:
                        break
                    self.emit(session.receive_cloud(text, time.perf_counter()))
                if tokens.usage.prompt_tokens:
                    session.stats["prompt_tokens"] = tokens.usage.prompt_tokens
                # Finish before closing the response: the correction goes out at once.
                self.emit(
                    session.cloud_finished(
                        time.perf_counter(),
                        completion_tokens=tokens.usage.completion_tokens or None,
                    )
                )
        except SpeculateError as exc:
            self.emit(session.cloud_failed(exc, time.perf_counter()))
