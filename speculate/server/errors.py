"""HTTP errors, in one place: every error that ends a request before its stream is a
:class:`~speculate.errors.SpeculateError` carrying its status; the handler below turns it
into JSON in the shape the route's clients expect.

- OpenAI's routes (``/v1/chat/completions``, ``/v1/models``): OpenAI's shape,
  ``{"error": {"message", "type", "param", "code"}}``, so SDKs raise the right exception.
- Every other route: ``{"error": {"code", "message"}}`` (plus ``param`` when one is at fault).

``Retry-After`` goes with every error that says when to come back (429, 503), and
``WWW-Authenticate`` with 401.
"""

from __future__ import annotations

import json
import math

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speculate.errors import BadRequest, SpeculateError

OPENAI_ROUTES = ("/v1/chat/completions", "/v1/models")


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


def error_response(exc: SpeculateError, path: str) -> JSONResponse:
    """The response for ``exc`` on the route at ``path``."""
    status = exc.http_status
    if path.startswith(OPENAI_ROUTES):
        error: dict[str, object] = {
            "message": exc.message,
            "type": _openai_type(status),
            "param": exc.param,
            "code": exc.code,
        }
    else:
        error = {"code": exc.code, "message": exc.message}
        if exc.param is not None:
            error["param"] = exc.param
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": error}, status_code=status, headers=headers)


async def handle_speculate_error(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler for the whole tree."""
    assert isinstance(exc, SpeculateError)
    return error_response(exc, request.url.path)


EXCEPTION_HANDLERS = {SpeculateError: handle_speculate_error}


async def read_json(request: Request, limit: int) -> object:
    """The request body as JSON, or a BadRequest explaining what is wrong with it."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"the body is larger than {limit} bytes")
    if not body:
        raise BadRequest("the body is empty; send a JSON object with a 'messages' list")
    return parse_json(bytes(body))


MAX_DEPTH = 32  # a chat request nests 5 deep; far more is an attack on the parser


def parse_json(data: bytes | str) -> object:
    """JSON from a client, or a BadRequest: too deep to parse (``[`` × 100,000 would
    overflow the parser's stack) or nested deeper than :data:`MAX_DEPTH`."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise BadRequest(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if _depth(value) > MAX_DEPTH:
        raise BadRequest(f"the JSON is nested deeper than {MAX_DEPTH} levels")
    return value


def _depth(value: object) -> int:
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            todo.extend((child, depth + 1) for child in children)
    return deepest


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
