"""HTTP error responses: always JSON, always with a code a client can switch on."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse

from speculate.errors import BadRequest, SpeculateError


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def from_exception(exc: SpeculateError, status: int = 400) -> JSONResponse:
    return error_response(status, exc.code, exc.message)


async def read_json(request: Request, limit: int) -> object:
    """The request body as JSON, or a BadRequest explaining what is wrong with it."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"the body is larger than {limit} bytes")
    if not body:
        raise BadRequest("the body is empty; send a JSON object with a 'messages' list")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
