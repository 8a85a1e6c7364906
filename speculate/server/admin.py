"""``POST /admin/edge-model``: swap the edge model without downtime (admin keys only).

Off unless ``server.admin_keys`` is set; the key goes in ``Authorization: Bearer``.  Body
``{"model": NAME | PATH | "hf:OWNER/REPO/FILE.gguf"}``.  The new model is loaded next to
the running one; on success new requests use it (200 with its name and SHA-256), on
failure nothing changes (422 ``model_load_failed`` saying why).  ``SIGHUP`` with a changed
``edge.model`` in the config file does the same.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speculate.errors import BadRequest, Forbidden, Unauthorized
from speculate.server.auth import key_matches
from speculate.server.errors import read_json
from speculate.server.state import AppState


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def swap_edge_model(request: Request) -> Response:
    state: AppState = request.app.state.speculate
    keys = [k for k in state.settings.server.admin_keys if k]
    if not keys:
        raise Forbidden("admin requests are off: set server.admin_keys")
    if not key_matches(_bearer(request), keys):
        raise Unauthorized("an admin key is needed: send 'Authorization: Bearer <admin key>'")
    data = await read_json(request, 4096)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, str) or not model.strip():
        raise BadRequest('send {"model": NAME, PATH or hf:OWNER/REPO/FILE.gguf}', param="model")
    return JSONResponse(await state.swap_edge(model.strip()))
