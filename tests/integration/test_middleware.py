"""Middleware added the ordinary FastAPI way runs on every route, the hot inference routes
included: both lanes are built from the app's one list of middleware. Real HTTP, real socket."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aeserve.serving.app import create_app
from aeserve.serving.settings import Settings
from tests.helpers import ROOT, app_on_a_socket

SEEN: list[str] = []


class StampMiddleware:
    """Adds `x-stamp` to every answer and records the path it saw."""

    def __init__(self, app: ASGIApp, stamp: str) -> None:
        self.app = app
        self.stamp = stamp.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        SEEN.append(scope["path"])

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-stamp", self.stamp)]
            await send(message)

        await self.app(scope, receive, stamped)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = create_app(Settings(models_dir=ROOT / "models", poll_interval_s=0, log_format="text"))
    app.add_middleware(StampMiddleware, stamp="added-later")
    with app_on_a_socket(app) as served:
        yield served


@pytest.mark.parametrize("path", ["/anomaly-score", "/models/breast-cancer/encode",
                                  "/models/breast-cancer/versions/1/reconstruct"])
def test_an_added_middleware_runs_on_the_hot_inference_routes(url, path):
    width = 30  # the shipped model's features
    SEEN.clear()
    answer = httpx.post(url + path, json={"instances": np.ones((2, width)).tolist()})
    assert answer.status_code == 200
    assert answer.headers["x-stamp"] == "added-later"
    assert answer.headers["x-request-id"]  # the built-in request middleware ran too
    assert [path] == SEEN


def test_and_on_every_other_route_and_error(url):
    for method, path, status in [("GET", "/healthz", 200), ("GET", "/models", 200),
                                 ("POST", "/v2/models/breast-cancer/infer", 422),
                                 ("POST", "/anomaly-score", 422), ("GET", "/nowhere", 404)]:
        answer = httpx.request(method, url + path, json={"instances": "no"})
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["x-stamp"] == "added-later", path
