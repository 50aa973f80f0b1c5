"""POST /encode, /reconstruct, /anomaly-score: on the default model, a named model, or a version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from service.deps import get_repository, get_settings, read_body
from service.errors import UnknownVersion
from service.inference import run_operation
from service.repository import ModelRepository
from service.schemas import (
    AnomalyScoreResponse,
    EncodeResponse,
    ErrorResponse,
    InstancesRequest,
    ReconstructResponse,
)
from service.settings import Settings

router = APIRouter(tags=["inference"])
Repo = Annotated[ModelRepository, Depends(get_repository)]
Conf = Annotated[Settings, Depends(get_settings)]

_RESPONSES = {
    "encode": (EncodeResponse, "Embeddings (the innermost hidden layer) of each row."),
    "reconstruct": (ReconstructResponse, "Reconstruction of each row in raw feature units."),
    "anomaly-score": (AnomalyScoreResponse,
                      "Score, threshold, verdict and percentile of each row."),
}
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 404, 413, 415, 422, 503)}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": InstancesRequest.model_json_schema()},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                         "description": "float32 little-endian rows"},
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def parse_version(version: str) -> int:
    if not version.isdigit() or int(version) < 1:
        raise UnknownVersion(f"version {version!r} is not a positive integer", version=version)
    return int(version)


def _add_routes(operation: str) -> None:
    model, summary = _RESPONSES[operation]

    async def handle(request: Request, repository: ModelRepository, settings: Settings,
                     name: str | None, version: str | None) -> Response:
        request.state.endpoint = operation
        entry = repository.get(name, parse_version(version) if version is not None else None)
        request.state.model, request.state.version = entry.name, entry.version
        body = await read_body(request, settings.max_body_bytes)
        headers = request.headers
        encoded, rows = await run_operation(
            operation, entry, body, headers.get("content-type"), headers.get("accept"),
            settings, request.app.state.metrics, request.app.state.executor)
        request.state.rows = rows
        return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)

    common = {"response_model": model, "responses": _ERRORS, "openapi_extra": _BODY,
              "description": summary}

    @router.post(f"/{operation}", summary=f"{operation} (default model)", **common)
    async def on_default(request: Request, repository: Repo, settings: Conf) -> Response:
        return await handle(request, repository, settings, None, None)

    @router.post(f"/models/{{name}}/{operation}", summary=f"{operation} (active version)",
                 **common)
    async def on_model(name: str, request: Request, repository: Repo, settings: Conf) -> Response:
        return await handle(request, repository, settings, name, None)

    @router.post(f"/models/{{name}}/versions/{{version}}/{operation}",
                 summary=f"{operation} (pinned version)", **common)
    async def on_version(name: str, version: str, request: Request, repository: Repo,
                         settings: Conf) -> Response:
        return await handle(request, repository, settings, name, version)


for _operation in _RESPONSES:
    _add_routes(_operation)
