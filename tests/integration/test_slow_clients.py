"""Slow and numerous clients: a connection that never finishes its request head, and a stalled
upload, get a 408 and lose their connection; beyond the concurrency limit new requests get a 503
at once. `aeserve serve` on the shipped model, raw
sockets."""

from __future__ import annotations

import json
import socket
import time

import httpx

from tests.helpers import ROOT, address, read_response, server_process


def test_a_stalled_upload_is_cut_off_with_a_408():
    with server_process(ROOT / "models", AESERVE_BODY_TIMEOUT_S="0.5") as server:
        with socket.create_connection(address(server.url), timeout=10) as sock:
            sock.sendall(b"POST /anomaly-score HTTP/1.1\r\nHost: t\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 1000\r\n\r\n{\"instances\": [")
            started = time.monotonic()
            reply = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                reply += chunk
            assert 0.4 < time.monotonic() - started < 5
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        assert b'"body_timeout"' in body
        # a prompt client is served as ever
        assert httpx.post(f"{server.url}/anomaly-score", content=(
            ROOT / "examples" / "breast_cancer_rows.json").read_bytes(),
            headers={"content-type": "application/json"}).status_code == 200


def _read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started, reply = time.monotonic(), b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply, time.monotonic() - started


def test_slow_or_silent_request_heads_are_cut_off_with_a_408():
    with server_process(ROOT / "models", AESERVE_HEADER_TIMEOUT_S="0.5") as server:
        opened = time.monotonic()
        silent = socket.create_connection(address(server.url), timeout=10)
        trickling = socket.create_connection(address(server.url), timeout=10)
        with silent, trickling:
            trickling.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # never the blank line
            for sock in (silent, trickling):
                reply, _ = _read_until_closed(sock)
                assert 0.4 < time.monotonic() - opened < 5
                head, _, body = reply.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
                assert json.loads(body)["error"]["code"] == "header_timeout"
        # A prompt request on a kept-alive connection is answered; the next request's head has
        # its own deadline, counted from its first byte.
        with socket.create_connection(address(server.url), timeout=10) as kept_alive:
            kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(kept_alive)[0] == 200
            kept_alive.sendall(b"GET /healthz HTTP/1.1\r\n")
            reply, waited = _read_until_closed(kept_alive)
            assert reply.startswith(b"HTTP/1.1 408") and waited < 5
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_beyond_the_concurrency_limit_new_requests_get_a_503():
    """Requests in progress count toward AESERVE_MAX_CONCURRENCY; sockets still sending their
    heads (a slowloris) do not, so prompt clients are served beside them."""
    with server_process(ROOT / "models", AESERVE_MAX_CONCURRENCY="3",
                        AESERVE_HEADER_TIMEOUT_S="30") as server:
        slow = [socket.create_connection(address(server.url), timeout=10) for _ in range(20)]
        for sock in slow:
            sock.sendall(b"POST /anomaly-score HTTP/1.1\r\nHost: t\r\n")  # heads unfinished
        try:
            time.sleep(0.3)  # the server has accepted them
            assert httpx.get(f"{server.url}/models", timeout=10).status_code == 200
            uploads = [socket.create_connection(address(server.url), timeout=10)
                       for _ in range(3)]
            for sock in uploads:  # three requests in progress: heads done, bodies pending
                sock.sendall(b"POST /anomaly-score HTTP/1.1\r\nHost: t\r\nContent-Type: "
                             b"application/json\r\nContent-Length: 1000\r\n\r\n{")
            time.sleep(0.3)
            refused = httpx.get(f"{server.url}/models", timeout=10)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
            assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
            for sock in uploads:
                sock.close()
            time.sleep(0.3)
            assert httpx.get(f"{server.url}/models", timeout=10).status_code == 200
        finally:
            for sock in slow:
                sock.close()


def test_beyond_the_connection_limit_new_requests_get_a_503():
    with server_process(ROOT / "models", AESERVE_MAX_CONNECTIONS="3") as server:
        idle = [socket.create_connection(address(server.url), timeout=10) for _ in range(3)]
        try:
            time.sleep(0.3)  # the server has accepted them
            response = httpx.get(f"{server.url}/healthz", timeout=10)
            assert response.status_code == 503
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
