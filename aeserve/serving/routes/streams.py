"""POST /models/{name}/stream: scores and alarms for readings of named series
(aeserve/serving/streams.py). A raw ASGI route, on the hot lane with the inference routes."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route
from starlette.types import Receive, Scope

from aeserve.serving.asgi import Endpoint, read_body
from aeserve.serving.schemas.core import ErrorResponse, StreamRequest, StreamResponse

PATH = "/models/{name}/stream"


async def handle(scope: Scope, headers: dict[bytes, bytes], receive: Receive
                 ) -> tuple[bytes, str, dict]:
    app = scope["app"]
    state = scope["state"]
    state["endpoint"] = "stream"
    name = scope["path_params"]["name"]
    state["model"] = name
    body = await read_body(headers, receive, app.settings.max_body_bytes,
                           app.settings.body_timeout_s)
    answer, rows = await app.streams.stream(name, body)
    state["rows"] = rows
    return answer, "application/json", {"X-Model": name}


routes = [Route(PATH, Endpoint(handle), methods=["POST"])]


def openapi_paths(schemas: dict[str, Any]) -> dict[str, Any]:
    """The route's OpenAPI description; its component schemas are added to `schemas`."""

    def ref(model) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = {"content": {"application/json": {"schema": ref(ErrorResponse)}}}
    return {PATH: {"post": {
        "tags": ["inference"],
        "summary": "Score readings of named series, keeping each series' window and alarm",
        "description": "Readings of one series ({series, rows}) or several ({streams}); each "
                       "reading gets the score of the window ending at it, its verdict, the "
                       "smoothed score and the series' alarm state (docs/streams.md).",
        "operationId": "stream_models_name",
        "parameters": [{"name": "name", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": ref(StreamRequest)}}},
        "responses": {
            "200": {"description": "Success",
                    "content": {"application/json": {"schema": ref(StreamResponse)}}},
            **{str(code): {"description": "Error", **error}
               for code in (400, 401, 404, 409, 413, 422, 503)},
        },
    }}}
