"""The FastAPI application: `create_app()` builds the parts and wires them together.

    settings -> metrics -> repository (each loaded version with its batcher) -> data plane
    -> routes (thin) -> middleware (declared once, for both lanes) -> error handlers
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aeserve import __version__
from aeserve.artifact.errors import schema_problems
from aeserve.serving.asgi import error_json
from aeserve.serving.dataplane import DataPlane, batcher_factory
from aeserve.serving.decoding import BodyDecoder
from aeserve.serving.errors import InvalidParameter, MethodNotAllowed, NotFound, ServiceError
from aeserve.serving.hotlane import HotLane
from aeserve.serving.lifecycle import lifespan
from aeserve.serving.logs import configure_logging
from aeserve.serving.metrics import Metrics
from aeserve.serving.middleware import InFlight, RequestMiddleware, error_body
from aeserve.serving.repository import ModelRepository
from aeserve.serving.routes import admin, feedback, health, inference, models, streams, v2
from aeserve.serving.settings import Settings, intra_op_threads
from aeserve.serving.startup import tune_interpreter
from aeserve.serving.streams import StreamService

log = logging.getLogger("aeserve")

#: The inference routes: raw ASGI endpoints, served by the hot lane (aeserve/serving/hotlane.py).
HOT_ROUTES: list[Route] = [*inference.routes, *v2.infer_routes, *streams.routes]


class ProviderRefused(RuntimeError):
    """AESERVE_PROVIDER=cuda and a model could not run on CUDA: the server refuses to start."""


class AeserveApp(FastAPI):
    """FastAPI, holding the server's parts as typed attributes, with POSTs on the inference
    routes sent down the hot lane.

    Both lanes run the same middleware: `user_middleware` (the list given at construction plus
    anything added later with `add_middleware`), wrapped around FastAPI's router on one lane
    and around the hot routes' dispatcher on the other, when the app first starts.
    """

    def __init__(self, *, settings: Settings, repository: ModelRepository, metrics: Metrics,
                 dataplane: DataPlane, run_executor: ThreadPoolExecutor,
                 middleware: Sequence[Middleware]) -> None:
        super().__init__(
            title="aeserve",
            summary="Autoencoder anomaly detection over HTTP: encode, reconstruct, score.",
            version=__version__, lifespan=lifespan, middleware=middleware)
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self.dataplane = dataplane
        self.streams = StreamService(settings, repository, metrics, dataplane.decoder)
        self.run_executor = run_executor
        self.draining = False  # set on SIGTERM: /readyz answers 503 (aeserve/serving/lifecycle.py)
        self.hot_lane: HotLane | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        self.hot_lane = HotLane(HOT_ROUTES, self._wrap_in_user_middleware)
        return stack

    def _wrap_in_user_middleware(self, endpoint: ASGIApp) -> ASGIApp:
        """The same layers, in the same order, as FastAPI puts around its router."""
        app = endpoint
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        if scope["type"] == "http" and scope["method"] == "POST":
            found = self.hot_lane.match(scope["path"])
            if found is not None:
                scope["app"] = self
                scope["endpoint"], scope["path_params"] = found
                await self.hot_lane.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def sync_model_metrics(self) -> None:
        """`aeserve_model_info`: 1 for each ready version, after every change of the table."""
        self.metrics.set_models([(v.name, v.version, v.session.providers)
                                 for m in self.repository.models.values()
                                 for v in m.versions.values() if v.state == "ready"])


def middleware(settings: Settings, metrics: Metrics) -> list[Middleware]:
    """Every middleware of the app, outermost first; both lanes are built from this list."""
    layers = []
    if settings.cors_origins:
        layers.append(Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                                 allow_methods=["GET", "POST"], allow_headers=["*"]))
    layers.append(Middleware(RequestMiddleware, settings=settings, metrics=metrics,
                             in_flight=InFlight(settings.max_concurrency)))
    return layers


def create_app(settings: Settings | None = None) -> AeserveApp:
    """Build the app and load the model repository under `settings.models_dir`."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    tune_interpreter(settings)
    metrics = Metrics()
    # onnxruntime runs leave the event loop through this pool: one thread per worker process,
    # each run using intra_op_threads cores, so the process never oversubscribes its share.
    run_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
    repository = ModelRepository(
        settings, make_batcher=batcher_factory(settings, metrics, run_executor),
        on_load_failure=lambda v: metrics.load_failures.labels(v.name, str(v.version)).inc())
    repository.refresh()
    refused = repository.provider_failures() if settings.provider == "cuda" else []
    if refused:
        raise ProviderRefused("; ".join(f"{v.name}/{v.version}: {v.error}" for v in refused))
    # Large bodies are decoded and large answers encoded off the loop, as many at once as there
    # are cores for this worker.
    decoder = BodyDecoder(threads=intra_op_threads(settings),
                          process_min_bytes=settings.decode_process_min_bytes)
    app = AeserveApp(settings=settings, repository=repository, metrics=metrics,
                     dataplane=DataPlane(settings, repository, metrics, decoder),
                     run_executor=run_executor, middleware=middleware(settings, metrics))
    app.sync_model_metrics()
    ready = {name: [v.version for v in m.versions.values() if v.state == "ready"]
             for name, m in repository.models.items()}
    log.info("serving %s: ready versions %s; default model %s; provider setting %s",
             settings.models_dir, ready, repository.default_name, settings.provider)

    # Routes go into the app's own table, hottest first: a request is matched against the routes
    # in order, and FastAPI's include_router would add a layer of matching per router.
    app.router.routes.extend(HOT_ROUTES)
    for router in (v2.router, health.router, models.router, feedback.router,
                   admin.router):
        app.router.routes.extend(router.routes)
    app.openapi = lambda: _openapi(app)
    _install_error_handlers(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document for its own routes, plus the raw inference routes' descriptions."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             routes=app.routes)
        paths, components = inference.openapi_paths()
        paths.update(streams.openapi_paths(components))
        v2_paths, v2_components = v2.openapi_paths()
        schema["paths"] = {**paths, **v2_paths, **schema.get("paths", {})}
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            {**components, **v2_components})
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
        return _error(request, InvalidParameter(schema_problems(exc.errors())
                                                or "invalid request"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error(request, NotFound(f"no route {request.url.path}"))
        if exc.status_code == 405:
            return _error(request, MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}"))
        return Response(error_body(request.url.path, "http_error", str(exc.detail)),
                        status_code=exc.status_code, media_type="application/json")
    # Unexpected exceptions are answered by RequestMiddleware (aeserve/serving/middleware.py),
    # on both lanes: a 500 naming the request id, the connection kept.
