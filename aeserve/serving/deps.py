"""FastAPI dependencies: the app's model repository."""

from __future__ import annotations

from fastapi import Request

from aeserve.serving.repository import ModelRepository


# Dependencies are coroutines on purpose: FastAPI runs a plain `def` dependency in the thread
# pool, a hand-off that costs more than a small request's whole inference.
async def get_repository(request: Request) -> ModelRepository:
    return request.app.repository
