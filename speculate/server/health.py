"""Liveness, readiness and the per-request result."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speculate.core.protocol import Error
from speculate.core.text import ShownText
from speculate.errors import NotFound
from speculate.server.state import AppState


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: AppState | None = getattr(request.app.state, "speculate", None)
    if state is None:
        return JSONResponse({"ready": False, "reason": "loading the edge model"}, status_code=503)
    cloud = state.backends.cloud
    cloud_report: dict[str, object] = {"state": "none"}
    if cloud is not None:
        probe = await state.health.probe()  # a probe also informs the circuit breaker
        state.metrics.cloud_up.set(1.0 if probe.get("state") == "up" else 0.0)
        cloud_report = {
            "model": cloud.model_name,
            "standin": state.standin is not None,
            # The stand-in listens on loopback only; showing where helps debugging.
            **(
                {
                    "base_url": state.standin.base_url,
                    "standin_state": state.standin.state,
                    "standin_restarts": state.standin.restarts,
                }
                if state.standin is not None
                else {}
            ),
            **probe,
            **state.health.snapshot(),
        }
    queue = await state.refiner.counts() if state.refiner is not None else None
    return JSONResponse(
        {
            "ready": True,
            "edge": {
                "model": state.backends.edge.model_name,
                "sha256": state.backends.edge.model_sha256,
                "state": "loaded",
            },
            "cloud": cloud_report,
            "queue": queue,
        }
    )


async def request_result(request: Request) -> Response:
    """The request's current or final text, rebuilt from its events."""
    state: AppState = request.app.state.speculate
    request_id = request.path_params["request_id"]
    log = state.requests.get(request_id)
    if log is None:
        raise NotFound(f"no request {request_id!r} is known")
    shown = ShownText()
    for event in log.events:
        shown.apply(event)
    done, fatal = shown.done, shown.fatal
    # A provisional done: the draft stands and the cloud's refinement waits in the queue
    # (it lands on this request when the cloud is back).
    queued = done is None and fatal is None and shown.provisional is not None
    done = done or shown.provisional
    return JSONResponse(
        {
            "request_id": request_id,
            "route": log.summary().route,
            "state": "queued" if queued else "done" if done else "failed" if fatal else "running",
            "text": shown.text,
            "committed": shown.committed,
            "final_source": done.final_source if done else None,
            "stats": done.stats if done else None,
            "error": fatal.fields() if isinstance(fatal, Error) else None,
            "last_seq": shown.last_seq,
        }
    )
