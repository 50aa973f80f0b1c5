"""Operator routes: reload the repository now, without waiting for the next poll.

Mounted under /admin/, which the middleware refuses unless AESERVE_API_KEY is set and sent.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from aeserve.serving.deps import get_repository
from aeserve.serving.repository import ModelRepository
from aeserve.serving.routes.models import model_summary

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/reload", summary="Rescan the model repository now")
async def reload(request: Request,
                 repository: Annotated[ModelRepository, Depends(get_repository)]) -> dict[str, Any]:
    request.state.endpoint = "admin"
    await run_in_threadpool(repository.refresh)
    request.app.sync_model_metrics()
    default = repository.default_name
    return {"models": [model_summary(m, default) for _, m in sorted(repository.models.items())]}
