"""What a client asks for: one request, as every layer below the server sees it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from speculate.core.chat import Message

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
