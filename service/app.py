"""The FastAPI application: `create_app()` wires settings, the repository, routes and errors."""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from service import __version__
from service.asgi import error_json
from service.decoder import DecoderProcess
from service.errors import InvalidParameter, MethodNotAllowed, NotFound, ServiceError
from service.hotlane import HotLane
from service.lifecycle import lifespan
from service.logs import configure_logging
from service.metrics import Metrics
from service.middleware import RequestMiddleware, error_body
from service.repository import ModelRepository
from service.routes import admin, health, inference, models, v2
from service.settings import Settings, intra_op_threads

log = logging.getLogger("aeserve")


class ProviderRefused(RuntimeError):
    """AESERVE_PROVIDER=cuda and a model could not run on CUDA: the server refuses to start."""


class AeserveApp(FastAPI):
    """FastAPI, with POSTs on the inference routes sent down the hot lane (service/hotlane.py)."""

    hot_lane: HotLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hot_lane is not None and scope["type"] == "http" and scope["method"] == "POST":
            found = self.hot_lane.match(scope["path"])
            if found is not None:
                scope["app"] = self
                scope["endpoint"], scope["path_params"] = found
                await self.hot_lane.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> AeserveApp:
    """Build the app and load the model repository under `settings.models_dir`."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    metrics = Metrics()
    repository = ModelRepository(
        settings,
        on_load_failure=lambda v: metrics.load_failures.labels(v.name, str(v.version)).inc())
    repository.refresh()
    refused = repository.provider_failures() if settings.provider == "cuda" else []
    if refused:
        raise ProviderRefused("; ".join(f"{v.name}/{v.version}: {v.error}" for v in refused))

    app = AeserveApp(
        title="aeserve",
        summary="Autoencoder anomaly detection over HTTP: encode, reconstruct, score.",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.repository = repository
    app.state.metrics = metrics
    app.state.draining = False
    # onnxruntime runs leave the event loop through this pool: one thread per worker process,
    # each run using intra_op_threads cores, so the process never oversubscribes its share.
    app.state.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
    # Large bodies are decoded and large answers encoded here, as many at once as there are
    # cores for this worker.
    app.state.codec_executor = ThreadPoolExecutor(max_workers=intra_op_threads(settings),
                                                  thread_name_prefix="codec")
    app.state.decoder = DecoderProcess(settings.decode_process_min_bytes)

    def sync_model_metrics() -> None:
        metrics.set_models([(v.name, v.version, v.session.providers)
                            for m in repository.models.values() for v in m.versions.values()
                            if v.state == "ready"])

    app.state.sync_model_metrics = sync_model_metrics
    sync_model_metrics()
    ready = {name: [v.version for v in m.versions.values() if v.state == "ready"]
             for name, m in repository.models.items()}
    log.info("serving %s: ready versions %s; default model %s; provider setting %s",
             settings.models_dir, ready, repository.default_name, settings.provider)

    # Routes go into the app's own table, hottest first: a request is matched against the routes
    # in order, and FastAPI's include_router would add a layer of matching per router.
    app.router.routes.extend([*inference.routes, *v2.infer_routes])
    for router in (v2.router, health.router, models.router, admin.router):
        app.router.routes.extend(router.routes)
    app.openapi = lambda: _openapi(app)
    _install_error_handlers(app)
    app.add_middleware(RequestMiddleware, settings=settings, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])

    def hot_stack(endpoint: ASGIApp) -> ASGIApp:  # the same layers as above, in the same order
        stack: ASGIApp = RequestMiddleware(endpoint, settings=settings, metrics=metrics)
        if settings.cors_origins:
            stack = CORSMiddleware(stack, allow_origins=settings.cors_origins,
                                   allow_methods=["GET", "POST"], allow_headers=["*"])
        return stack

    app.hot_lane = HotLane([*inference.routes, *v2.infer_routes], hot_stack)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document for its own routes, plus the raw inference routes' descriptions."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             routes=app.routes)
        paths, components = inference.openapi_paths()
        schema["paths"] = {**paths, **v2.openapi_paths(), **schema.get("paths", {})}
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        app.openapi_schema = schema
    return app.openapi_schema


def _error(request: Request, error: ServiceError) -> Response:
    """Our error body, or the Open Inference Protocol's under /v2 (as the raw routes render it)."""
    return Response(error_json(request.url.path, error), status_code=error.status,
                    media_type="application/json")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        return _error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return _error(request, InvalidParameter("; ".join(problems) or "invalid request"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error(request, NotFound(f"no route {request.url.path}"))
        if exc.status_code == 405:
            return _error(request, MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}"))
        return Response(error_body(request.url.path, "http_error", str(exc.detail)),
                        status_code=exc.status_code, media_type="application/json")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return Response(error_body(request.url.path, "internal_error",
                                   f"{type(exc).__name__}: {exc}"),
                        status_code=500, media_type="application/json")
