"""The hot lane: which paths it takes, and what it does with an endpoint's unexpected error."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.routing import Route

from aeserve.serving.hotlane import HotLane
from aeserve.serving.routes import inference, v2


def _lane() -> HotLane:
    return HotLane([*inference.routes, *v2.infer_routes], wrap=lambda app: app)


@pytest.mark.parametrize(("path", "params"), [
    ("/anomaly-score", {}),
    ("/encode", {}),
    ("/models/sensors/reconstruct", {"name": "sensors"}),
    ("/models/sensors/versions/3/anomaly-score", {"name": "sensors", "version": "3"}),
    ("/v2/models/sensors/infer", {"name": "sensors"}),
    ("/v2/models/sensors/versions/12/infer", {"name": "sensors", "version": "12"}),
])
def test_inference_paths_take_the_lane_with_their_parameters(path, params):
    found = _lane().match(path)
    assert found is not None
    assert found[1] == params


@pytest.mark.parametrize("path", [
    "/models", "/models/sensors", "/anomaly-score/", "/models//encode", "/metrics",
    "/models/sensors/versions/3/unknown", "/v2/models/sensors/ready", "/healthz",
])
def test_other_paths_are_left_to_fastapi(path):
    assert _lane().match(path) is None


def test_an_unexpected_error_becomes_a_json_500_without_its_text():
    from aeserve.serving.metrics import Metrics
    from aeserve.serving.middleware import RequestMiddleware
    from aeserve.serving.settings import Settings

    async def broken(scope, receive, send):
        raise RuntimeError("boom: /secret/path")

    lane = HotLane([Route("/anomaly-score", broken, methods=["POST"])],
                   wrap=lambda app: RequestMiddleware(app, settings=Settings(), metrics=Metrics()))
    endpoint, params = lane.match("/anomaly-score")
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/anomaly-score", "headers": [],
             "endpoint": endpoint, "path_params": params}
    asyncio.run(lane.app(scope, receive, send))
    assert sent[0]["status"] == 500
    request_id = dict(sent[0]["headers"])[b"x-request-id"].decode()
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "internal_error" and request_id in error["message"]
    assert "boom" not in sent[1]["body"].decode()
