"""POST /encode, /reconstruct, /anomaly-score: on the default model, a named model, or a version.

Thin raw ASGI routes (aeserve/serving/asgi.py) over the data plane (`DataPlane.infer`); their
OpenAPI description is built by `openapi_paths`.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qs

from starlette.routing import Route
from starlette.types import Receive, Scope

from aeserve.serving.asgi import Endpoint, Handler, header, read_body
from aeserve.serving.dataplane import DataPlane, ScoreOptions
from aeserve.serving.errors import InvalidParameter
from aeserve.serving.schemas.core import (
    AnomalyScoreResponse,
    EncodeResponse,
    ErrorResponse,
    InstancesRequest,
    ReconstructResponse,
)

OPERATIONS = {
    "encode": (EncodeResponse, "Embeddings (the innermost hidden layer) of each row."),
    "reconstruct": (ReconstructResponse, "Reconstruction of each row in raw feature units."),
    "anomaly-score": (AnomalyScoreResponse,
                      "Score, threshold, verdict and percentile of each row."),
}
PREFIXES = {"": "default model", "/models/{name}": "active version",
            "/models/{name}/versions/{version}": "pinned version"}


def operation_handler(operation: str) -> Handler:
    async def handle(scope: Scope, headers: dict[bytes, bytes], receive: Receive
                     ) -> tuple[bytes, str, dict]:
        plane: DataPlane = scope["app"].dataplane
        state, params = scope["state"], scope["path_params"]
        state["endpoint"] = operation
        entry = plane.resolve(params.get("name"), params.get("version"))
        state["model"], state["version"] = entry.name, entry.version
        options = score_options(scope["query_string"])
        body = await read_body(headers, receive, plane.settings.max_body_bytes,
                               plane.settings.body_timeout_s)
        encoded, rows = await plane.infer(operation, entry, body,
                                          header(headers, b"content-type"),
                                          header(headers, b"accept"), options)
        state["rows"] = rows
        return encoded.body, encoded.media_type, encoded.headers

    return handle


def score_options(query_string: bytes) -> ScoreOptions:
    """`threshold=`, `explain=` and `top_k=` from the query string, or a typed 422."""
    if not query_string:
        return ScoreOptions()
    params = {k: v[-1] for k, v in parse_qs(query_string.decode("latin-1")).items()}
    unknown = sorted(set(params) - {"threshold", "explain", "top_k"})
    if unknown:
        raise InvalidParameter(f"unknown query parameters {unknown}; known: threshold, "
                               "explain, top_k")
    try:
        threshold = float(params["threshold"]) if "threshold" in params else None
        top_k = int(params.get("top_k", 3))
    except ValueError:
        raise InvalidParameter("threshold must be a number and top_k an integer") from None
    if threshold is not None and not math.isfinite(threshold):
        raise InvalidParameter("threshold must be a finite number")
    if top_k < 1:
        raise InvalidParameter("top_k must be at least 1")
    explain = params.get("explain", "false").lower()
    if explain not in ("true", "false", "1", "0"):
        raise InvalidParameter("explain must be true or false")
    return ScoreOptions(threshold=threshold, explain=explain in ("true", "1"), top_k=top_k)


routes = [Route(f"{prefix}/{operation}", Endpoint(operation_handler(operation)),
                methods=["POST"])
          for operation in OPERATIONS for prefix in PREFIXES]


def openapi_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) describing the routes above."""
    schemas: dict[str, Any] = {}

    def ref(model) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    request_body = {
        "required": True,
        "content": {
            "application/json": {"schema": ref(InstancesRequest)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                         "description": "float32 little-endian rows"},
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    error = {"content": {"application/json": {"schema": ref(ErrorResponse)}}}
    paths: dict[str, Any] = {}
    for operation, (model, description) in OPERATIONS.items():
        for prefix, scope in PREFIXES.items():
            parameters = [{"name": p, "in": "path", "required": True,
                           "schema": {"type": "string"}}
                          for p in ("name", "version") if "{" + p + "}" in prefix]
            if operation == "anomaly-score":
                parameters += [
                    {"name": "threshold", "in": "query", "required": False,
                     "schema": {"type": "number"},
                     "description": "Use this threshold instead of the model's."},
                    {"name": "explain", "in": "query", "required": False,
                     "schema": {"type": "boolean", "default": False},
                     "description": "Add per-feature errors and the top features."},
                    {"name": "top_k", "in": "query", "required": False,
                     "schema": {"type": "integer", "default": 3, "minimum": 1}}]
            paths[f"{prefix}/{operation}"] = {"post": {
                "tags": ["inference"],
                "summary": f"{operation} ({scope})",
                "description": description + " Answers JSON, or raw float32 / .npy when the "
                                             "Accept header asks for it.",
                "operationId": f"{operation.replace('-', '_')}{prefix.replace('/', '_')}"
                               .replace("{", "").replace("}", ""),
                "parameters": parameters,
                "requestBody": request_body,
                "responses": {
                    "200": {"description": "Success",
                            "content": {"application/json": {"schema": ref(model)}}},
                    **{str(code): {"description": "Error", **error}
                       for code in (400, 401, 404, 413, 415, 422, 503)},
                },
            }}
    return paths, schemas
