"""``POST /v1/prewarm``: a conversation sent ahead while its next turn is being typed.

The edge evaluates the history and the cloud's prefix cache takes it in, so the
request that follows pays only for the new turn. Validated and admitted like a request
(it spends the same models); it answers when the warming is done, with what each side
did (``warmed``, ``busy``, ``skipped`` or ``failed``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speculate.server.errors import client_address, read_json
from speculate.server.limits import admit
from speculate.server.schemas import parse_prewarm
from speculate.server.state import AppState


async def prewarm(request: Request) -> Response:
    state: AppState = request.app.state.speculate
    limits = state.settings.server
    messages = parse_prewarm(await read_json(request, limits.ws_max_message_bytes), limits)
    admit(state, client_address(request))
    return JSONResponse(await state.orchestrator.prewarm(messages))
