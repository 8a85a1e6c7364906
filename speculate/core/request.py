"""What a client asks for: one request, as every layer below the server sees it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from speculate.core.chat import Message
from speculate.core.trim import ConversationFit

Mode = Literal["auto", "speculative", "verify", "edge", "cloud"]


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

    @property
    def edge_messages(self) -> list[Message]:
        return self.messages if self.fit is None else self.fit.edge

    @property
    def cloud_messages(self) -> list[Message]:
        return self.messages if self.fit is None else self.fit.cloud

    @staticmethod
    def new_id() -> str:
        return "req_" + uuid.uuid4().hex
