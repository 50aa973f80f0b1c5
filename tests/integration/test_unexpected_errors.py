"""Connections: a bug on any route is a JSON 500 naming the request id, not the exception's
text, and the client's keep-alive connection survives it; while the server drains, every answer
closes its connection. Real HTTP on raw sockets."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from aeserve.serving.app import AeserveApp, create_app
from aeserve.serving.settings import Settings
from tests.helpers import ROOT, app_on_a_socket, read_response
from tests.helpers import address as socket_address


@pytest.fixture(scope="module")
def app() -> AeserveApp:
    app = create_app(Settings(models_dir=ROOT / "models", poll_interval_s=0, log_format="text"))

    async def broken() -> dict:
        raise RuntimeError("boom: /secret/path")

    app.add_api_route("/broken", broken, methods=["GET"])
    return app


@pytest.fixture(scope="module")
def address(app) -> Iterator[tuple[str, int]]:
    with app_on_a_socket(app) as url:
        yield socket_address(url)


def test_a_500_names_the_request_and_keeps_the_connection(address):
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /broken HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 500 and headers.get("connection") != "close"
        error = json.loads(body)["error"]
        assert error["code"] == "internal_error"
        assert headers["x-request-id"] in error["message"] and "boom" not in body.decode()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")  # the same connection
        status, _, body = read_response(sock)
        assert status == 200 and json.loads(body) == {"status": "ok"}


def test_while_draining_every_answer_closes_its_connection(app, address):
    app.draining = True  # as the SIGTERM handler sets it (aeserve/serving/lifecycle.py)
    app.settings.drain_seconds = 5.0
    try:
        for method, path in (("GET", "/healthz"), ("POST", "/anomaly-score")):
            with socket.create_connection(address, timeout=10) as sock:
                body = b'{"instances": [[' + b",".join([b"1.0"] * 30) + b"]]}"
                sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: "
                             f"application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                             .encode() + body)
                _, headers, _ = read_response(sock)
                assert headers["connection"] == "close", (path, headers)
                assert sock.recv(1) == b""  # and the server closed it
        # Without a drain the listener closes at once: clients are not sent to reconnect.
        app.settings.drain_seconds = 0.0
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            _, headers, _ = read_response(sock)
            assert "connection" not in headers
    finally:
        app.draining = False
        app.settings.drain_seconds = 0.0
