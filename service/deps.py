"""FastAPI dependencies: the app's repository and settings."""

from __future__ import annotations

from fastapi import Request

from service.repository import ModelRepository
from service.settings import Settings


# Dependencies are coroutines on purpose: FastAPI runs a plain `def` dependency in the thread
# pool, a hand-off that costs more than a small request's whole inference.
async def get_repository(request: Request) -> ModelRepository:
    return request.app.state.repository


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings
