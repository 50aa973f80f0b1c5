"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from service.deps import get_repository
from service.repository import ModelRepository

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the default model has a ready version")
def readyz(repository: Annotated[ModelRepository, Depends(get_repository)]) -> JSONResponse:
    ready = repository.is_ready()
    body = {
        "status": "ready" if ready else "not_ready",
        "default_model": repository.default_name,
        "models": {name: (m.active.version if m.active else None)
                   for name, m in sorted(repository.models.items())},
    }
    return JSONResponse(body, status_code=200 if ready else 503)
