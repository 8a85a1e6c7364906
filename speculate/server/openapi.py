"""The OpenAPI description of the HTTP endpoints, served at ``/openapi.json``.

Request bodies come straight from the pydantic models that validate them, so the
schema cannot drift from what the server accepts; schemathesis checks the server
against it in the test suite.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speculate.server.openai_fields import ChatBody
from speculate.server.schemas import PrewarmBody, SpeculateBody
from speculate.settings import ServerSettings
from speculate.version import __version__

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message"],
            "properties": {"message": {"type": "string"}, "code": {"type": ["string", "null"]}},
        }
    },
}
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "id": {"type": "string"},
        "data": {"type": "string"},
    },
}
EVENT_STREAM = {"text/event-stream": {"schema": SSE_EVENT}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json(ERROR, "an error") for status in statuses}


def build_schema(limits: ServerSettings | None = None) -> dict[str, Any]:
    limits = limits or ServerSettings()
    _, defs = models_json_schema(
        [(SpeculateBody, "validation"), (ChatBody, "validation"), (PrewarmBody, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    components = defs.get("$defs", {})
    # The configured limits are part of the contract too.
    for body, field in (
        ("SpeculateBody", "max_tokens"),
        ("ChatBody", "max_tokens"),
        ("ChatBody", "max_completion_tokens"),
    ):
        for option in components[body]["properties"][field].get("anyOf", []):
            if option.get("type") == "integer":
                option["maximum"] = limits.max_tokens_limit
    components["ChatMessage"]["properties"]["content"]["maxLength"] = limits.max_prompt_chars
    for body in ("SpeculateBody", "ChatBody", "PrewarmBody"):
        components[body]["properties"]["messages"]["maxItems"] = limits.max_messages
    request_id = [
        {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    obj = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "speculate", "version": __version__},
        "paths": {
            "/healthz": {"get": {"responses": {"200": _json(obj, "alive")}}},
            "/readyz": {
                "get": {"responses": {"200": _json(obj, "ready"), "503": _json(obj, "loading")}}
            },
            "/v1/models": {"get": {"responses": {"200": _json(obj, "the model names")}}},
            "/v1/speculate": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SpeculateBody"}
                            }
                        },
                    },
                    "responses": {
                        "200": {"description": "the event stream", "content": EVENT_STREAM},
                        "202": _json(obj, "detached (Prefer: respond-async)"),
                        **_errors(400, 401, 429, 503),
                    },
                }
            },
            "/v1/prewarm": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/PrewarmBody"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json(obj, "what each side did: warmed, busy, skipped, failed"),
                        **_errors(400, 401, 429, 503),
                    },
                }
            },
            "/v1/chat/completions": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ChatBody"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "a completion, or a stream of chunks",
                            "content": {"application/json": {"schema": obj}, **EVENT_STREAM},
                        },
                        **_errors(400, 401, 404, 429, 502, 503),
                    },
                }
            },
            "/v1/requests/{request_id}": {
                "get": {
                    "parameters": request_id,
                    "responses": {"200": _json(obj, "the request"), **_errors(401, 404)},
                },
                "delete": {
                    "parameters": request_id,
                    "responses": {"202": _json(obj, "cancelled"), **_errors(401, 404, 409)},
                },
            },
        },
        "components": {"schemas": components},
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(build_schema(request.app.state.speculate.settings.server))
