"""What each field of OpenAI's chat completions request does here: honoured, sent to
the cloud, or refused with a 400 that names it.  Nothing is dropped without a word.

| field | here |
|---|---|
| model, messages, stream, stream_options, n (1) | honoured |
| max_tokens, max_completion_tokens, temperature, top_p, seed, presence_penalty, frequency_penalty, stop | both sides; ``stop`` also cuts the shown text |
| top_k, min_p (not OpenAI's; vLLM's and llama.cpp's) | both sides |
| response_format | JSON formats go to the cloud; on the edge (``speculate-edge``, or kept on the device) a grammar makes the draft valid JSON |
| tools, tool_choice, parallel_tool_calls | the request goes to the cloud; tool calls come back as OpenAI streams them |
| user, safety_identifier, metadata, store, service_tier, prompt_cache_key, prompt_cache_retention, prompt_cache_options | sent to the cloud when it is asked; they do not change an answer |
| reasoning_effort, verbosity, web_search_options | sent to the cloud; refused on ``speculate-edge`` |
| logprobs (true), top_logprobs, logit_bias, functions, function_call, audio, modalities (other than text), prediction, moderation | refused |
| speculate | this server's extension: ``events`` (every speculate event), ``draft`` (``"reasoning"``: the draft as ``reasoning_content``) |
"""  # noqa: E501 - a table

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from speculate.core.request import Mode, Sampling, SpeculateRequest
from speculate.errors import BadRequest
from speculate.server.schemas import (
    Messages,
    Temperature,
    TokenCount,
    conversation,
    numbers_only,
)
from speculate.settings import ServerSettings

__all__ = ["MODELS", "ChatBody", "parse_chat"]

# Model names choose the mode; ``+draft`` adds the draft as reasoning_content.
MODELS: dict[str, Mode] = {
    "speculate": "auto",
    "speculate-speculative": "speculative",
    "speculate-verify": "verify",
    "speculate-edge": "edge",
    "speculate-cloud": "cloud",
}
DRAFT_SUFFIX = "+draft"
DRAFT_MODELS = ("speculate", "speculate-speculative", "speculate-verify")

Number = Annotated[float, BeforeValidator(numbers_only)]
Penalty = Annotated[float, Field(ge=-2, le=2), BeforeValidator(numbers_only)]

# Sent to the cloud as given: bookkeeping that never changes an answer ...
CLOUD_BOOKKEEPING = (
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
)
# ... and what shapes the cloud's answer, which the edge cannot honour.
CLOUD_SHAPING = ("reasoning_effort", "verbosity", "web_search_options")
CLOUD_TOOLS = ("tools", "tool_choice", "parallel_tool_calls")
# Refused unless left at their default (the value a client sends when it means "no").
REFUSED: dict[str, str] = {
    "logprobs": "log-probabilities are not returned",
    "top_logprobs": "log-probabilities are not returned",
    "logit_bias": "token ids differ between the edge and cloud tokenizers",
    "functions": "deprecated by OpenAI; send tools",
    "function_call": "deprecated by OpenAI; send tool_choice",
    "audio": "only text is answered",
    "prediction": "predicted outputs are not supported",
    "moderation": "moderation is not offered",
}


def _NULL_OR(*allowed: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "null"}, *allowed]}


class StreamOptions(BaseModel):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI's padding option: nothing to pad here


class Extension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: bool = False
    draft: Literal["hidden", "reasoning"] = "hidden"


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=256)


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"]
    function: ToolFunction


class JsonSchema(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=256)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self


RESPONSE_FORMAT_SCHEMA = _NULL_OR(
    {
        "type": "object",
        "properties": {"type": {"enum": ["text", "json_object"]}},
        "required": ["type"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "type": {"const": "json_schema"},
            "json_schema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 256},
                    "schema": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                },
                "required": ["name"],
            },
        },
        "required": ["type", "json_schema"],
        "additionalProperties": False,
    },
)


def _needs_tools(name: str) -> dict[str, Any]:
    """JSON Schema for "``name`` only with tools" (OpenAI refuses it otherwise too)."""
    return {
        "anyOf": [
            {"properties": {name: {"anyOf": [{"type": "null"}, {"const": "none"}]}}},
            {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}},
        ]
    }


class ChatBody(BaseModel):
    # Every field is named here: an unknown one is a 400 that names it.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "dependentSchemas": {name: _needs_tools(name) for name in CLOUD_TOOLS[1:]}
        },
    )

    model: str
    messages: Messages
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=1), BeforeValidator(numbers_only)] | None = 1
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(gt=0, le=1), BeforeValidator(numbers_only)] | None = None
    top_k: Annotated[int, Field(ge=0), BeforeValidator(numbers_only)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1), BeforeValidator(numbers_only)] | None = None
    seed: Annotated[int, BeforeValidator(numbers_only)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    stop: str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | None = (
        None
    )
    response_format: Annotated[ResponseFormat | None, WithJsonSchema(RESPONSE_FORMAT_SCHEMA)] = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    modalities: Annotated[
        list[str] | None,
        WithJsonSchema(_NULL_OR({"type": "array", "items": {"const": "text"}})),
    ] = None
    # Sent to the cloud as given.
    user: str | None = None
    safety_identifier: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    # Refused when set (see REFUSED); the schema shows the values taken.
    logprobs: Annotated[Any, WithJsonSchema(_NULL_OR({"const": False}))] = None
    top_logprobs: Annotated[Any, WithJsonSchema(_NULL_OR())] = None
    logit_bias: Annotated[Any, WithJsonSchema(_NULL_OR({"type": "object", "maxProperties": 0}))] = (
        None
    )
    functions: Annotated[Any, WithJsonSchema(_NULL_OR({"type": "array", "maxItems": 0}))] = None
    function_call: Annotated[Any, WithJsonSchema(_NULL_OR())] = None
    audio: Annotated[Any, WithJsonSchema(_NULL_OR())] = None
    prediction: Annotated[Any, WithJsonSchema(_NULL_OR())] = None
    moderation: Annotated[Any, WithJsonSchema(_NULL_OR())] = None
    speculate: Extension = Extension()

    @property
    def mode_name(self) -> str:
        return self.model.removesuffix(DRAFT_SUFFIX)

    @property
    def draft_as_reasoning(self) -> bool:
        return self.speculate.draft == "reasoning" or self.model.endswith(DRAFT_SUFFIX)


def model_names() -> list[str]:
    return [*MODELS, *(name + DRAFT_SUFFIX for name in DRAFT_MODELS)]


def _validated(data: object) -> ChatBody:
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return ChatBody.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "not a field of OpenAI's chat completions request"
        raise BadRequest(f"{where}: {message}", param=where or None) from None


def _refuse_unsupported(body: ChatBody) -> None:
    for name, why in REFUSED.items():
        value = getattr(body, name)
        if value is not None and value is not False and value != {} and value != []:
            raise BadRequest(f"{name} is not supported: {why}", param=name)
    if body.modalities is not None and set(body.modalities) - {"text"}:
        raise BadRequest("only the text modality is answered", param="modalities")


def _cloud_fields(body: ChatBody, mode: Mode) -> dict[str, Any]:
    given = body.model_dump(include={*CLOUD_BOOKKEEPING, *CLOUD_SHAPING}, exclude_none=True)
    shaping = [name for name in CLOUD_SHAPING if name in given]
    if shaping and mode == "edge":
        raise BadRequest(
            f"{shaping[0]} is for the cloud, and speculate-edge answers on the device",
            param=shaping[0],
        )
    if body.tools:
        if mode == "edge":
            raise BadRequest(
                "tools need the cloud, and speculate-edge answers on the device", param="tools"
            )
        given.update(body.model_dump(include=set(CLOUD_TOOLS), exclude_none=True))
    elif body.tool_choice not in (None, "none") or body.parallel_tool_calls is not None:
        name = "tool_choice" if body.tool_choice not in (None, "none") else "parallel_tool_calls"
        raise BadRequest(f"{name} needs tools", param=name)
    return given


def parse_chat(data: object, limits: ServerSettings) -> tuple[ChatBody, SpeculateRequest]:
    """The body checked field by field, and the request it asks for."""
    body = _validated(data)
    _refuse_unsupported(body)
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None and max_tokens > limits.max_tokens_limit:
        raise BadRequest(
            f"max_tokens must be at most {limits.max_tokens_limit}",
            param="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        )
    mode = MODELS.get(body.mode_name, "auto")
    cloud_fields = _cloud_fields(body, mode)
    response_format = (
        body.response_format.model_dump(by_alias=True, exclude_none=True)
        if (body.response_format is not None and body.response_format.type != "text")
        else None
    )
    needs_cloud = ""
    if body.tools:
        needs_cloud = "tools are offered: the cloud answers"
    elif response_format is not None:
        needs_cloud = f"response_format {response_format['type']}: the cloud answers"
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    sampling = Sampling(
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        stop=tuple(s for s in stop if s),
        response_format=response_format,
    )
    job = SpeculateRequest(
        messages=conversation(body.messages, limits),
        mode=mode,
        max_tokens=max_tokens,
        temperature=body.temperature,
        request_id="chatcmpl-" + SpeculateRequest.new_id().removeprefix("req_"),
        append_only=True,
        sampling=sampling,
        cloud_fields=cloud_fields,
        needs_cloud=needs_cloud,
    )
    return body, job
