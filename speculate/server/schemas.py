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
    model_validator,
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


class ToolCallFunction(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    arguments: str


class ToolCall(BaseModel):
    """A tool call an assistant turn made, as OpenAI's API carries it."""

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # "developer" is OpenAI's newer name for the system message.
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content | None = None  # only an assistant turn that called tools omits it
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[ToolCall] | None = None  # an assistant turn that called tools
    tool_call_id: str | None = Field(default=None, max_length=256)  # a tool's result

    @model_validator(mode="after")
    def _tool_fields_belong(self) -> ChatMessage:
        if "content" not in self.model_fields_set and not self.tool_calls:
            raise ValueError("content is required")
        self.content = self.content or ""
        if self.role != "tool":
            self.tool_call_id = None  # it means something only on a tool's result
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        return self

    @field_validator("content")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("content holds a lone surrogate (not valid Unicode)") from None
        return value


_NAME = {"anyOf": [{"type": "string", "maxLength": 256}, {"type": "null"}]}
_NO_CALL_ID = _NAME  # only a tool's result names the call it answers; elsewhere ignored
# Only an assistant turn calls tools; elsewhere no calls (null or, as some SDKs send, []).
_NO_CALLS = {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}
_TOOL_CALL = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 256},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 256},
                "arguments": {"type": "string"},
            },
            "required": ["name", "arguments"],
        },
    },
    "required": ["id", "function"],
}
# What the model's checks accept, by role (a tool's result names its call; an assistant
# turn that called tools may leave out its content).
MESSAGE_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "role": {"enum": ["system", "developer", "user"]},
                "content": TEXT_PARTS_SCHEMA,
                "name": _NAME,
                "tool_calls": _NO_CALLS,
                "tool_call_id": _NO_CALL_ID,
            },
            "required": ["role", "content"],
        },
        {
            "type": "object",
            "properties": {
                "role": {"const": "assistant"},
                "content": TEXT_PARTS_SCHEMA,
                "name": _NAME,
                "tool_calls": {"anyOf": [{"type": "array", "items": _TOOL_CALL}, {"type": "null"}]},
                "tool_call_id": _NO_CALL_ID,
            },
            "required": ["role", "content"],
        },
        {
            "type": "object",
            "properties": {
                "role": {"const": "assistant"},
                "content": TEXT_PARTS_SCHEMA,
                "name": _NAME,
                "tool_calls": {"type": "array", "items": _TOOL_CALL, "minItems": 1},
                "tool_call_id": _NO_CALL_ID,
            },
            "required": ["role", "tool_calls"],
        },
        {
            "type": "object",
            "properties": {
                "role": {"const": "tool"},
                "content": TEXT_PARTS_SCHEMA,
                "tool_call_id": {"type": "string", "minLength": 1, "maxLength": 256},
                "name": _NAME,
                "tool_calls": _NO_CALLS,
            },
            "required": ["role", "content", "tool_call_id"],
        },
    ]
}
Messages = Annotated[
    list[Annotated[ChatMessage, WithJsonSchema(MESSAGE_SCHEMA)]], Field(min_length=1)
]


class SpeculateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: Messages
    mode: Literal["auto", "speculative", "verify", "edge", "cloud"] = "auto"
    max_tokens: TokenCount | None = None
    temperature: Temperature | None = None


class PrewarmBody(BaseModel):
    """A conversation sent ahead of its next turn (``POST /v1/prewarm``, WebSocket
    ``{"type": "prewarm"}``)."""

    model_config = ConfigDict(extra="forbid")

    messages: Messages


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
    if sum(len(m.content or "") for m in messages) > limits.max_prompt_chars:
        raise BadRequest(f"the conversation is longer than {limits.max_prompt_chars} characters")
    return [_message(m) for m in messages]


def _message(message: ChatMessage) -> Message:
    plain: Message = {
        "role": "system" if message.role == "developer" else message.role,
        "content": message.content or "",
    }
    if message.name is not None:
        plain["name"] = message.name
    if message.tool_calls:
        plain["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.tool_call_id is not None:
        plain["tool_call_id"] = message.tool_call_id
    return plain


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
