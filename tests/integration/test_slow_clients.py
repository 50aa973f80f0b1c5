"""Slow and numerous clients: a stalled upload gets a 408 and loses its connection; beyond the
concurrency limit new requests get a 503 at once. `aeserve serve` on the shipped model, raw
sockets."""

from __future__ import annotations

import socket
import time

import httpx

from tests.helpers import ROOT, address, server_process


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


def test_beyond_the_concurrency_limit_new_requests_get_a_503():
    with server_process(ROOT / "models", AESERVE_MAX_CONCURRENCY="3") as server:
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
