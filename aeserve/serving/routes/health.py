"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from aeserve.serving.deps import get_repository
from aeserve.serving.metrics import CONTENT_TYPE
from aeserve.serving.repository import ModelRepository

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz(request: Request) -> dict[str, str]:
    request.state.endpoint = "health"
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the default model is ready and no shutdown is under way")
async def readyz(request: Request,
           repository: Annotated[ModelRepository, Depends(get_repository)]) -> JSONResponse:
    request.state.endpoint = "health"
    draining = request.app.draining
    ready = repository.is_ready() and not draining
    status = "ready" if ready else ("draining" if draining else "not_ready")
    body = {
        "status": status,
        "default_model": repository.default_name,
        "models": {name: (m.active.version if m.active else None)
                   for name, m in sorted(repository.models.items())},
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    request.state.endpoint = "metrics"
    return Response(request.app.metrics.render(), media_type=CONTENT_TYPE)
