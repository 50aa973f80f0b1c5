"""The Open Inference Protocol (KServe V2) over REST, with its model-repository extension.

Thin routes: inference goes to the data plane (`DataPlane.infer_v2`), the body's format is
aeserve/serving/v2_codec.py's, the schemas are aeserve/serving/schemas/v2.py's. Errors have the
protocol's shape, `{"error": "<message>"}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import Receive, Scope

from aeserve import __version__
from aeserve.artifact.card import INPUT_NAME, OUTPUT_NAMES
from aeserve.artifact.errors import schema_problems
from aeserve.serving.asgi import Endpoint, header, read_body, request_body
from aeserve.serving.dataplane import DataPlane, resolve
from aeserve.serving.deps import get_repository
from aeserve.serving.errors import InvalidParameter, ModelNotReady
from aeserve.serving.repository import ModelRepository, ModelVersion
from aeserve.serving.schemas.v2 import IndexRequest, InferenceRequest
from aeserve.serving.v2_codec import ANNOTATIONS, BINARY_HEADER

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
Repo = Annotated[ModelRepository, Depends(get_repository)]

EXTENSIONS = ["model_repository", "binary_tensor_data"]


def _is_ready(request: Request) -> bool:
    return request.app.repository.is_ready() and not request.app.draining


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "aeserve", "version": __version__, "extensions": EXTENSIONS}


@router.get("/health/live", summary="Server liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Server readiness")
async def ready(request: Request) -> JSONResponse:
    is_ready = _is_ready(request)
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 400)


def _metadata(repository: ModelRepository, entry: ModelVersion) -> dict[str, Any]:
    card = entry.card
    widths = {"embedding": [-1, card.architecture.embedding_dim],
              "reconstruction": [-1, card.input_dim], "score": [-1],
              "feature_errors": [-1, card.input_dim]}
    model = repository.models[entry.name]
    return {
        "name": entry.name,
        "versions": [str(v.version) for v in sorted(model.versions.values(),
                                                     key=lambda v: v.version)
                     if v.state == "ready"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, card.input_dim]}],
        "outputs": [{"name": n, "datatype": "FP32", "shape": widths[n]} for n in OUTPUT_NAMES]
        + [{"name": n, "datatype": datatype, "shape": [-1]}
           for n, (datatype, _) in ANNOTATIONS.items()],
        "parameters": {"feature_names": card.feature_names, "threshold": card.threshold,
                       "providers": entry.session.providers},
    }


@router.get("/models/{name}", summary="Model metadata (active version)")
async def model_metadata(name: str, repository: Repo) -> dict[str, Any]:
    return _metadata(repository, resolve(repository, name, None))


@router.get("/models/{name}/versions/{version}", summary="Model metadata (one version)")
async def version_metadata(name: str, version: str, repository: Repo) -> dict[str, Any]:
    return _metadata(repository, resolve(repository, name, version))


def _readiness(repository: ModelRepository, name: str, version: str | None) -> JSONResponse:
    try:
        resolve(repository, name, version)
    except ModelNotReady as exc:
        return JSONResponse({"name": name, "ready": False, "error": exc.message},
                            status_code=400)
    return JSONResponse({"name": name, "ready": True})


@router.get("/models/{name}/ready", summary="Model readiness (active version)")
async def model_ready(name: str, repository: Repo) -> JSONResponse:
    return _readiness(repository, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness (one version)")
async def version_ready(name: str, version: str, repository: Repo) -> JSONResponse:
    return _readiness(repository, name, version)


async def _infer(scope: Scope, headers: dict[bytes, bytes], receive: Receive
                 ) -> tuple[bytes, str, dict]:
    plane: DataPlane = scope["app"].dataplane
    state, params = scope["state"], scope["path_params"]
    state["endpoint"] = "v2-infer"
    entry = plane.resolve(params["name"], params.get("version"))
    state["model"], state["version"] = entry.name, entry.version
    body = await read_body(headers, receive, plane.settings.max_body_bytes,
                           plane.settings.body_timeout_s)
    encoded, rows = await plane.infer_v2(entry, body, header(headers, BINARY_HEADER.encode()))
    state["rows"] = rows
    return encoded.body, encoded.media_type, encoded.headers


infer_routes = [Route(path, Endpoint(_infer), methods=["POST"]) for path in
                ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")]


def openapi_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) describing the raw inference routes above."""
    request_schema = InferenceRequest.model_json_schema(
        ref_template="#/components/schemas/{model}")
    components = {**request_schema.pop("$defs", {}), "InferenceRequest": request_schema}
    body = {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                     "description": "binary tensor extension: the JSON header "
                                                    "(Inference-Header-Content-Length bytes) "
                                                    "then the tensors"}}}
    paths = {}
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        paths[path] = {"post": {
            "tags": ["open inference protocol (v2)"],
            "summary": "Inference" + (" (one version)" if "version" in path else ""),
            "operationId": "v2_infer" + ("_version" if "version" in path else ""),
            "parameters": [{"name": p, "in": "path", "required": True,
                            "schema": {"type": "string"}}
                           for p in ("name", "version") if "{" + p + "}" in path],
            "requestBody": body,
            "responses": {"200": {"description": "Inference response (JSON, or JSON header "
                                                 "followed by binary tensors)"},
                          "400": {"description": "Error: {\"error\": \"message\"}"}},
        }}
    return paths, components


# -- repository extension (needs AESERVE_API_KEY; see aeserve/serving/middleware.py) ------------

#: An index request is a flag or two: anything larger is refused before it is read.
INDEX_BODY_BYTES = 64 * 1024


@router.post("/repository/index", summary="List every model version and its state")
async def repository_index(request: Request, repository: Repo) -> list[dict[str, Any]]:
    body = await request_body(request, INDEX_BODY_BYTES,
                              repository.settings.body_timeout_s)
    try:
        options = IndexRequest.model_validate_json(body) if body.strip() else IndexRequest()
    except ValidationError as exc:
        raise InvalidParameter("not a repository index request: "
                               f"{schema_problems(exc.errors(), 'body', limit=3)}") from None
    entries = []
    for name, model in sorted(repository.models.items()):
        for version in sorted(model.versions.values(), key=lambda v: v.version):
            state = "READY" if version.state == "ready" else "UNAVAILABLE"
            entries.append({"name": name, "version": str(version.version), "state": state,
                            "reason": version.error or ""})
    for name in sorted(repository.unloaded):
        entries.append({"name": name, "state": "UNAVAILABLE", "reason": "unloaded"})
    if options.ready:
        entries = [e for e in entries if e["state"] == "READY"]
    return entries


@router.post("/repository/models/{name}/load", summary="Load or reload a model")
async def repository_load(name: str, request: Request, repository: Repo) -> JSONResponse:
    model = await run_in_threadpool(repository.load_model, name)
    request.app.sync_model_metrics()
    if model.active is None:
        reasons = "; ".join([f"version {v.version}: {v.error}" for v in model.versions.values()]
                            + ([model.error] if model.error else []))
        return JSONResponse({"error": f"model {name!r} has no ready version: {reasons}"},
                            status_code=400)
    return JSONResponse({})


@router.post("/repository/models/{name}/unload", summary="Stop serving a model")
async def repository_unload(name: str, request: Request, repository: Repo) -> JSONResponse:
    repository.unload_model(name)
    request.app.sync_model_metrics()
    return JSONResponse({})
