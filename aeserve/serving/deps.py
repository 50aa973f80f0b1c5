"""FastAPI dependencies: the app and its model repository, typed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from aeserve.serving.repository import ModelRepository

if TYPE_CHECKING:
    from aeserve.serving.app import AeserveApp


# Dependencies are coroutines on purpose: FastAPI runs a plain `def` dependency in the thread
# pool, a hand-off that costs more than a small request's whole inference.
async def get_app(request: Request) -> AeserveApp:
    return request.app


async def get_repository(request: Request) -> ModelRepository:
    return request.app.repository
