"""The records and interfaces the engine is built from, and what one run receives.

The orchestrator builds a :class:`RunContext` for each request and hands it down; a run
never reaches back up to the orchestrator for anything. The protocols are what the layers
above plug in: the server's health monitor, the stores behind the offline queue and the
answer cache, and observers (metrics, the request log, log lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from speculate.backends.base import CloudBackend, EdgeBackend, GenerationParams
from speculate.core.chat import Message
from speculate.core.protocol import Event
from speculate.core.request import SpeculateRequest
from speculate.core.summary import RunSummary
from speculate.core.trim import Window
from speculate.core.verify import Planner
from speculate.errors import SpeculateError
from speculate.policy.privacy import PrivacyGuard
from speculate.policy.router import CloudHealth

__all__ = ["Backends", "Health", "Offline", "RunContext", "RunObserver", "StopReason"]


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
    # Each model's context window and tokenizer; None: unknown, the conversation is sent
    # whole and the model's own limit applies.
    edge_window: Window | None = None
    cloud_window: Window | None = None


class Offline(Protocol):
    """Where refinements wait for the cloud, and cloud answers are kept for offline use."""

    async def enqueue(self, request_id: str, job: dict[str, Any], events: list[Event]) -> bool:
        """Store durably; False if it cannot be kept (queue full)."""
        ...

    async def cached(self, messages: list[Message], variant: str) -> str | None: ...

    async def remember(self, messages: list[Message], variant: str, text: str) -> None: ...


class Health(Protocol):
    @property
    def view(self) -> CloudHealth: ...

    def succeeded(self) -> None: ...

    def failed(self, error: SpeculateError) -> None: ...


@dataclass(frozen=True, slots=True)
class RunContext:
    """Everything one request's run needs, decided before it starts."""

    backends: Backends
    edge_params: GenerationParams  # what the edge is asked (the request over the config)
    cloud_params: GenerationParams
    answer_variant: str  # with the messages, the answer cache's key
    guard: PrivacyGuard  # finds what redaction replaces
    planner: Planner  # verify mode's running estimates, shared by requests
    escalate: bool  # router.escalate: an unsure edge draft may bring the cloud in
    confidence_tokens: int  # draft tokens judged before that
    max_entropy: float  # their mean entropy (nats) above which the cloud is brought in
    health: Health | None = None
    offline: Offline | None = None
