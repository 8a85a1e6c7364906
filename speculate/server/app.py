"""The application factory: ``create_app(settings, backends=None)``.

With ``backends`` given (tests, embedding) the app uses them as they are; without,
start-up resolves and verifies the models (a missing or corrupt file stops start-up
with a message saying how to fix it), loads the edge model and connects to the
cloud, starting the local stand-in when no ``cloud.base_url`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from speculate.assets import web_dir
from speculate.engine.context import Backends
from speculate.errors import SpeculateError
from speculate.server import admin, health, openai_api, openapi, prewarm, sse, ws
from speculate.server.auth import ApiKeys
from speculate.server.direct import DIRECT_SEND
from speculate.server.errors import EXCEPTION_HANDLERS
from speculate.server.headers import SecurityHeaders
from speculate.server.hosts import HostGuard
from speculate.server.state import AppState, build_backends
from speculate.settings import Settings

WEB_DIR = web_dir()
log = logging.getLogger("speculate.server")


async def _no_ui(request: Request) -> Response:
    return JSONResponse(
        {
            "service": "speculate",
            "endpoints": ["POST /v1/speculate", "GET /v1/ws", "GET /readyz"],
            "ui": "not installed (web/ is missing)",
        }
    )


async def _metrics(request: Request) -> Response:
    state: AppState = request.app.state.speculate
    return await state.metrics.endpoint(request)


def _ui(static: StaticFiles) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return await static.get_response(request.url.path.lstrip("/"), request.scope)

    return serve


async def _request_resource(request: Request) -> Response:
    if request.method == "DELETE":
        return await sse.cancel(request)
    return await health.request_result(request)


async def _reload_on_sighup(state: AppState, config_path: Path) -> None:
    with anyio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            await _reload_edge(state, config_path)


async def _reload_edge(state: AppState, config_path: Path) -> None:
    """SIGHUP: read the config again; a changed ``edge.model`` is loaded and swapped in."""
    try:
        wanted = Settings.load(config_path).edge.model
        if wanted == state.edge_spec:
            log.info("SIGHUP: edge.model unchanged (%s)", wanted)
            return
        log.info("SIGHUP: loading edge model %s", wanted)
        await state.swap_edge(wanted)
    except SpeculateError as exc:  # logged, the running model serves on
        log.warning("SIGHUP: %s", exc.message)


@contextmanager
def _declared_asyncio() -> Iterator[None]:
    """Tell sniffio, while the app runs, that this thread runs asyncio.

    Where sniffio is installed (the OpenAI SDK brings it), anyio asks it for the event
    loop's library on every task group, event, sleep and cancel scope, and sniffio finds
    asyncio by looking up the current task each time: a tenth of the server's CPU per
    streamed event.  Its documented per-thread name answers at once.  Without sniffio,
    anyio asks asyncio directly, which is as cheap."""
    try:
        import sniffio
    except ImportError:
        yield
        return
    previous = sniffio.thread_local.name
    sniffio.thread_local.name = "asyncio"
    try:
        yield
    finally:
        sniffio.thread_local.name = previous


class _App(Starlette):
    """Starlette, keeping the server's own ``send`` in the scope for streams' frames
    (:mod:`speculate.server.direct`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[DIRECT_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    backends: Backends | None = None,
    *,
    config_path: Path | None = None,
) -> Starlette:
    """The app.  ``config_path``: the file ``settings`` came from; on ``SIGHUP`` it is read
    again and a changed ``edge.model`` is swapped in."""
    settings = settings or Settings.load()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with _declared_asyncio():
            async with serving(app):
                yield

    @asynccontextmanager
    async def serving(app: Starlette) -> AsyncIterator[None]:
        standin = None
        ready = backends
        if ready is None:
            ready, standin = await build_backends(settings)
        state = AppState.create(settings, ready, standin)
        loop = asyncio.get_running_loop()  # uvicorn runs asyncio; signals arrive on its thread

        def begin_shutdown() -> None:
            grace = settings.server.shutdown_grace_s
            loop.call_soon_threadsafe(state.jobs.request_drain, grace)

        app.state.begin_shutdown = begin_shutdown
        app.state.speculate = state
        try:
            if state.refiner is not None:
                await state.refiner.restore()
            async with state.jobs.running(), anyio.create_task_group() as services:
                services.start_soon(state.health.run)
                if config_path is not None:
                    services.start_soon(_reload_on_sighup, state, config_path)
                if state.standin is not None:  # back from a crash: probe now, close the circuit
                    services.start_soon(state.standin.supervise, state.health.probe)
                if state.refiner is not None and settings.store.queue:
                    services.start_soon(state.refiner.run)
                try:
                    yield
                finally:
                    services.cancel_scope.cancel()
        finally:
            if backends is None:  # only close what we opened ourselves
                await state.aclose()
            else:
                state.close_stores()

    routes: list[Route | WebSocketRoute] = [
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz),
        Route("/v1/speculate", sse.speculate, methods=["POST"]),
        Route("/v1/prewarm", prewarm.prewarm, methods=["POST"]),
        Route("/admin/edge-model", admin.swap_edge_model, methods=["POST"]),
        Route("/v1/speculate/{request_id}/events", sse.follow),
        # One route for both methods, so a 405 lists them both in Allow.
        Route("/v1/requests/{request_id}", _request_resource, methods=["GET", "DELETE"]),
        WebSocketRoute("/v1/ws", ws.websocket_endpoint),
        Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
        Route("/v1/models", openai_api.list_models),
        Route("/metrics", _metrics),
        Route("/openapi.json", openapi.openapi),
    ]
    if (WEB_DIR / "index.html").exists():
        # One GET/HEAD route per file rather than a mount at "/": a mount would swallow
        # every method on every path, so a PUT to an API route would get the UI's 405.
        ui = _ui(StaticFiles(directory=WEB_DIR, html=True))
        assets = sorted(
            p.relative_to(WEB_DIR).as_posix() for p in WEB_DIR.rglob("*") if p.is_file()
        )
        routes += [Route(f"/{name}", ui, methods=["GET", "HEAD"]) for name in ["", *assets]]
    else:
        routes.append(Route("/", _no_ui))
    server = settings.server
    middleware = [
        Middleware(
            HostGuard,
            bound_host=server.host,
            allowed_hosts=server.allowed_hosts,
            origins=[*server.allowed_origins, *server.cors_origins],
        ),
        Middleware(SecurityHeaders),
    ]
    if settings.server.cors_origins:  # exact origins only; never a wildcard by default
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.server.cors_origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["authorization", "content-type", "last-event-id", "prefer"],
                expose_headers=["x-request-id", "location"],
            )
        )
    middleware.append(Middleware(ApiKeys, keys=settings.server.api_keys))
    return _App(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
