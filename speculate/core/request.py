"""What a client asks for: one request, as every layer below the server sees it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from speculate.core.chat import Message, as_text
from speculate.core.trim import ConversationFit

Mode = Literal["auto", "speculative", "verify", "edge", "cloud"]


@dataclass(frozen=True, slots=True)
class Sampling:
    """What a client asks of the sampler besides length and temperature; None (or
    empty): the configured or the model's own default.  Both sides honour these."""

    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: tuple[str, ...] = ()
    # OpenAI's response_format: the cloud gets it as is; the edge turns a JSON format
    # into a grammar, so its draft is valid JSON too.
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SpeculateRequest:
    messages: list[Message]
    mode: Mode = "auto"
    max_tokens: int | None = None
    temperature: float | None = None
    request_id: str = ""
    append_only: bool = False  # commit text as soon as it is final (OpenAI-style clients)
    client: str = ""  # who asks (an address): limits and the edge's turns are per client
    fit: ConversationFit | None = None  # the messages each side gets (set before the run)
    sampling: Sampling = field(default_factory=Sampling)
    # Fields only the cloud can honour (tools, tool_choice, user, ...), sent as given.
    cloud_fields: dict[str, Any] = field(default_factory=dict)
    needs_cloud: str = ""  # why only the cloud can answer this (e.g. it offers tools)

    @property
    def edge_messages(self) -> list[Message]:
        return as_text(self.messages) if self.fit is None else self.fit.edge

    @property
    def cloud_messages(self) -> list[Message]:
        return self.messages if self.fit is None else self.fit.cloud

    @staticmethod
    def new_id() -> str:
        return "req_" + uuid.uuid4().hex
