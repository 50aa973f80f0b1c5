"""The FastAPI application: `create_app()` wires settings, the repository, routes and errors."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import InvalidParameter, MethodNotAllowed, NotFound, ServiceError
from service.repository import ModelRepository
from service.routes import health, inference, models
from service.settings import Settings

log = logging.getLogger("aeserve")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app and load every model version under `settings.models_dir`."""
    settings = settings or Settings()
    _configure_logging(settings.log_level)
    repository = ModelRepository(settings)
    repository.load()
    loaded = {name: [v.version for v in m.versions.values() if v.state == "ready"]
              for name, m in repository.models.items()}
    log.info("repository %s: ready versions %s; default model %s",
             settings.models_dir, loaded, repository.default_name)

    app = FastAPI(
        title="aeserve",
        summary="Autoencoder anomaly detection over HTTP: encode, reconstruct, score.",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.repository = repository
    app.include_router(health.router)
    app.include_router(inference.router)
    app.include_router(models.router)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        error = InvalidParameter("; ".join(problems) or "invalid request")
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error: ServiceError = NotFound(f"no route {request.url.path}")
        elif exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            return JSONResponse({"error": {"code": "http_error", "message": str(exc.detail)}},
                                status_code=exc.status_code)
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": {"code": "internal_error",
                                       "message": f"{type(exc).__name__}: {exc}"}},
                            status_code=500)


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aeserve").setLevel(level)
