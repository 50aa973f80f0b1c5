"""The Open Inference Protocol (KServe V2) over REST, with its model-repository extension.

Tensors travel as `{"name", "shape", "datatype", "data"}` with `data` flattened in row-major order
(nested lists are accepted too). The one input is `x` ([N, d], FP32 or FP64); the outputs are the
graph's: embedding, reconstruction, score, feature_errors (all four unless the request names some).
Errors have the protocol's shape, `{"error": "<message>"}`.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import Receive, Scope

from service import __version__
from service.asgi import Endpoint, parse_version, read_body
from service.card import INPUT_NAME, OUTPUT_NAMES
from service.codecs import dumps
from service.deps import get_repository
from service.errors import (
    InvalidInstances,
    MalformedJSON,
    ModelNotReady,
    NonFinite,
    NonNumeric,
    TooManyRows,
    WrongWidth,
)
from service.inference import (
    INLINE_BODY_BYTES,
    INLINE_RESPONSE_VALUES,
    batcher_for,
    off_loop,
)
from service.repository import ModelRepository, ModelVersion

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
Repo = Annotated[ModelRepository, Depends(get_repository)]

DATATYPES = {"FP32": np.float32, "FP64": np.float64}
EXTENSIONS = ["model_repository", "binary_tensor_data"]


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None  # checked and converted by numpy, never walked value by value here


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


def _is_ready(request: Request) -> bool:
    return request.app.state.repository.is_ready() and not request.app.state.draining


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


def _resolve(repository: ModelRepository, name: str, version: str | None) -> ModelVersion:
    return repository.get(name, parse_version(version) if version is not None else None)


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
        "outputs": [{"name": n, "datatype": "FP32", "shape": widths[n]} for n in OUTPUT_NAMES],
        "parameters": {"feature_names": card.feature_names, "threshold": card.threshold,
                       "providers": entry.session.providers},
    }


@router.get("/models/{name}", summary="Model metadata (active version)")
async def model_metadata(name: str, repository: Repo) -> dict[str, Any]:
    return _metadata(repository, _resolve(repository, name, None))


@router.get("/models/{name}/versions/{version}", summary="Model metadata (one version)")
async def version_metadata(name: str, version: str, repository: Repo) -> dict[str, Any]:
    return _metadata(repository, _resolve(repository, name, version))


def _readiness(repository: ModelRepository, name: str, version: str | None) -> JSONResponse:
    try:
        _resolve(repository, name, version)
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


BINARY_HEADER = "inference-header-content-length"


def parse_inference_request(body: bytes, header_length: str | None
                            ) -> tuple[InferenceRequest, bytes]:
    """The JSON request and, with the binary tensor extension, the bytes that follow it."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise MalformedJSON(f"Inference-Header-Content-Length {header_length!r} does not "
                                f"fit a body of {len(body)} bytes")
        body, binary = body[:int(header_length)], body[int(header_length):]
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the body is not valid JSON: {exc}") from None
    try:
        return InferenceRequest.model_validate(payload), binary
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors()[:3])
        raise InvalidInstances(f"not an inference request: {problems}") from None


def input_matrix(request: InferenceRequest, binary: bytes, width: int,
                 max_rows: int) -> np.ndarray:
    """The request's `x` tensor as C-contiguous float32 [N, width], or a typed error."""
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        names = [i.name for i in request.inputs]
        raise InvalidInstances(f"the model takes one input named {INPUT_NAME!r}, got {names}")
    tensor = request.inputs[0]
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise NonNumeric(f"datatype {tensor.datatype!r} is not supported; send FP32 or FP64")
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise WrongWidth(f"input shape {tensor.shape} does not match [N, {width}]",
                         expected=width)
    if tensor.shape[0] > max_rows:
        raise TooManyRows(f"{tensor.shape[0]} rows exceed the limit of {max_rows}")
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if size != len(binary) or size != tensor.shape[0] * width * np.dtype(dtype).itemsize:
            raise InvalidInstances(
                f"binary_data_size {size} does not match the {len(binary)} bytes sent or the "
                f"shape {tensor.shape} in {tensor.datatype}")
        values = np.frombuffer(binary, dtype=np.dtype(dtype).newbyteorder("<"))
    else:
        try:
            values = np.asarray(tensor.data, dtype=dtype)
        except (TypeError, ValueError):
            raise NonNumeric("input data must be numbers, flat or nested in the given "
                             "shape") from None
    if values.size != tensor.shape[0] * width or tensor.shape[0] == 0:
        raise InvalidInstances(f"input data has {values.size} values; shape {tensor.shape} "
                               f"needs {tensor.shape[0] * width} (and at least one row)")
    with np.errstate(over="ignore"):
        rows = np.ascontiguousarray(values.reshape(tensor.shape), dtype=np.float32)
    if not np.isfinite(rows).all():
        raise NonFinite("input data holds NaN, infinity, or values beyond float32's range")
    return rows


def requested_outputs(request: InferenceRequest) -> list[tuple[str, bool]]:
    """(name, as binary) for each output the client wants; all four, in JSON, by default."""
    binary_default = bool((request.parameters or {}).get("binary_data_output", False))
    if not request.outputs:
        return [(name, binary_default) for name in OUTPUT_NAMES]
    unknown = [o.name for o in request.outputs if o.name not in OUTPUT_NAMES]
    if unknown:
        raise InvalidInstances(f"unknown outputs {unknown}; choose from {list(OUTPUT_NAMES)}")
    return [(o.name, bool((o.parameters or {}).get("binary_data", binary_default)))
            for o in request.outputs]


def encode_inference_response(entry: ModelVersion, request: InferenceRequest,
                              wanted: list[tuple[str, bool]], results: dict[str, np.ndarray]
                              ) -> tuple[bytes, dict[str, str], str]:
    """JSON, or the binary extension's JSON header followed by raw little-endian tensors."""
    parameters: dict[str, Any] = {"threshold": entry.card.threshold}
    if any(name == "score" for name, _ in wanted):
        parameters["anomalies"] = int(np.count_nonzero(results["is_anomaly"]))
    outputs, blobs = [], []
    for name, as_binary in wanted:
        tensor = np.ascontiguousarray(results[name], dtype="<f4")
        entry_json: dict[str, Any] = {"name": name, "datatype": "FP32",
                                      "shape": list(tensor.shape)}
        if as_binary:
            blob = tensor.tobytes()
            entry_json["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry_json["data"] = tensor.ravel()
        outputs.append(entry_json)
    response: dict[str, Any] = {"model_name": entry.name, "model_version": str(entry.version),
                                "outputs": outputs, "parameters": parameters}
    if request.id is not None:
        response["id"] = request.id
    header = dumps(response)
    if not blobs:
        return header, {}, "application/json"
    return (header + b"".join(blobs), {"Inference-Header-Content-Length": str(len(header))},
            "application/octet-stream")


async def _infer(scope: Scope, headers: dict[bytes, bytes], receive: Receive
                 ) -> tuple[bytes, str, dict]:
    app_state, state, params = scope["app"].state, scope["state"], scope["path_params"]
    state["endpoint"] = "v2-infer"
    version = params.get("version")
    entry = app_state.repository.get(params["name"], parse_version(version) if version else None)
    state["model"], state["version"] = entry.name, entry.version
    settings, metrics = app_state.settings, app_state.metrics
    body = await read_body(headers, receive, settings.max_body_bytes)
    header_length = headers.get(BINARY_HEADER.encode())
    if header_length is not None:
        header_length = header_length.decode("latin-1")

    def decode() -> tuple[InferenceRequest, np.ndarray, list[tuple[str, bool]]]:
        parsed, binary = parse_inference_request(body, header_length)
        rows = input_matrix(parsed, binary, entry.card.input_dim, settings.max_rows)
        return parsed, rows, requested_outputs(parsed)

    inline = len(body) <= INLINE_BODY_BYTES
    parsed, rows, wanted = decode() if inline else await off_loop(app_state.codec_executor,
                                                                   decode)
    batcher = batcher_for(entry, settings, metrics, app_state.executor)
    results = await batcher.submit(rows, [name for name, _ in wanted])
    metrics.rows_counter(entry.name, entry.version, "v2-infer").inc(len(rows))
    args = (entry, parsed, wanted, results)
    if sum(results[name].size for name, binary in wanted if not binary) <= INLINE_RESPONSE_VALUES:
        payload, extra, kind = encode_inference_response(*args)
    else:
        payload, extra, kind = await off_loop(app_state.codec_executor,
                                              encode_inference_response, *args)
    state["rows"] = len(rows)
    return payload, kind, extra


infer_routes = [Route(path, Endpoint(_infer), methods=["POST"]) for path in
                ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")]


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of the raw inference routes above."""
    body = {"required": True, "content": {
        "application/json": {"schema": InferenceRequest.model_json_schema()},
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
    return paths


# -- repository extension (needs AESERVE_API_KEY; see service/middleware.py) ----------------------

class IndexRequest(BaseModel):
    repository_name: str | None = None
    ready: bool | None = None


@router.post("/repository/index", summary="List every model version and its state")
async def repository_index(request: Request, repository: Repo) -> list[dict[str, Any]]:
    body = await request.body()
    options = IndexRequest.model_validate_json(body) if body.strip() else IndexRequest()
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
    request.app.state.sync_model_metrics()
    if model.active is None:
        reasons = "; ".join(f"version {v.version}: {v.error}" for v in model.versions.values())
        return JSONResponse({"error": f"model {name!r} has no ready version: {reasons}"},
                            status_code=400)
    return JSONResponse({})


@router.post("/repository/models/{name}/unload", summary="Stop serving a model")
async def repository_unload(name: str, request: Request, repository: Repo) -> JSONResponse:
    repository.unload_model(name)
    request.app.state.sync_model_metrics()
    return JSONResponse({})
