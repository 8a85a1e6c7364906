"""Validation of what clients send, with messages a person can act on."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from speculate.core.chat import Message
from speculate.core.request import SpeculateRequest
from speculate.errors import BadRequest
from speculate.settings import ServerSettings


def numbers_only(value: Any) -> Any:
    # JSON false is not a temperature and "10" is not a token count (pydantic's lax mode
    # would take both); 10.0 is an integer, as JSON Schema says.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


TokenCount = Annotated[int, Field(ge=1), BeforeValidator(numbers_only)]
Temperature = Annotated[float, Field(ge=0, le=2), BeforeValidator(numbers_only)]


def joined_text_parts(value: Any) -> Any:
    """Content as OpenAI's SDKs and many chat UIs send it, a list of parts: the text
    parts joined; any other kind of part is refused by name. ``null`` (an assistant turn
    that only called tools) is empty text."""
    if value is None:
        return ""
    if not isinstance(value, list):
        return value
    texts = []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            shown = kind if isinstance(kind, str) else type(part).__name__
            raise ValueError(f"only text parts are supported, not {shown!r}")
        texts.append(part["text"])
    return "\n".join(texts)


TEXT_PARTS_SCHEMA = {
    "anyOf": [
        {"type": "string"},
        {"type": "null"},
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                "required": ["type", "text"],
            },
        },
    ]
}
Content = Annotated[str, BeforeValidator(joined_text_parts), WithJsonSchema(TEXT_PARTS_SCHEMA)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # "developer" is OpenAI's newer name for the system message.
    role: Literal["system", "developer", "user", "assistant"]
    content: Content

    @field_validator("content")
    @classmethod
    def _encodable(cls, value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("content holds a lone surrogate (not valid Unicode)") from None
        return value


class SpeculateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1)
    mode: Literal["auto", "speculative", "verify", "edge", "cloud"] = "auto"
    max_tokens: TokenCount | None = None
    temperature: Temperature | None = None


class PrewarmBody(BaseModel):
    """A conversation sent ahead of its next turn (``POST /v1/prewarm``, WebSocket
    ``{"type": "prewarm"}``)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1)


Body = TypeVar("Body", bound=BaseModel)


def _validated(model: type[Body], data: Any) -> Body:
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object with a 'messages' list")
    data = {k: v for k, v in data.items() if k not in ("type", "request_id")}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        )
        raise BadRequest(f"invalid request: {problems}") from None


def conversation(messages: list[ChatMessage], limits: ServerSettings) -> list[Message]:
    """The messages as every layer below takes them, within the size limits."""
    if len(messages) > limits.max_messages:
        raise BadRequest(f"the conversation has more than {limits.max_messages} messages")
    if sum(len(m.content) for m in messages) > limits.max_prompt_chars:
        raise BadRequest(f"the conversation is longer than {limits.max_prompt_chars} characters")
    return [
        {"role": "system" if m.role == "developer" else m.role, "content": m.content}
        for m in messages
    ]


def parse_prewarm(data: Any, limits: ServerSettings) -> list[Message]:
    return conversation(_validated(PrewarmBody, data).messages, limits)


def parse_speculate(data: Any, limits: ServerSettings) -> SpeculateRequest:
    """Validate a request body; raise :class:`BadRequest` with a readable message."""
    body = _validated(SpeculateBody, data)
    if body.max_tokens is not None and body.max_tokens > limits.max_tokens_limit:
        raise BadRequest(f"max_tokens must be at most {limits.max_tokens_limit}")
    messages = conversation(body.messages, limits)
    return SpeculateRequest(
        messages=messages,
        mode=body.mode,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        request_id=SpeculateRequest.new_id(),
    )
