"""Shutdown under load: every request sent is answered or refused at connect, and nothing holds
the process open. `aeserve serve` on the shipped model, SIGTERM from outside."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections import Counter

import httpx

from tests.helpers import ROOT, address, read_response, server_process

ROW = json.loads((ROOT / "examples" / "breast_cancer_rows.json").read_text())["instances"][:1]


def test_sigterm_under_load_loses_no_request_and_exits_0():
    with server_process(ROOT / "models") as server:
        outcomes: Counter[str] = Counter()
        lock, stop = threading.Lock(), threading.Event()

        def client() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                while not stop.is_set():
                    try:
                        status = str(http.post("/anomaly-score",
                                               json={"instances": ROW}).status_code)
                    except httpx.ConnectError:  # never accepted: the client knows
                        status = "refused"
                        stop.wait(0.05)
                    except httpx.HTTPError as error:  # sent, and never answered
                        status = f"lost: {type(error).__name__}"
                    with lock:
                        outcomes[status] += 1

        clients = [threading.Thread(target=client) for _ in range(16)]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        time.sleep(0.3)
        stop.set()
        for thread in clients:
            thread.join()
    assert outcomes["200"] > 100
    assert set(outcomes) <= {"200", "refused"}, outcomes


def test_idle_and_stalled_connections_do_not_hold_the_shutdown():
    with server_process(ROOT / "models", AESERVE_BODY_TIMEOUT_S="1") as server:
        idle = socket.create_connection(address(server.url), timeout=10)
        stalled = socket.create_connection(address(server.url), timeout=10)
        with idle, stalled:
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(idle)[0] == 200  # then kept alive, silent
            stalled.sendall(b"POST /anomaly-score HTTP/1.1\r\nHost: t\r\nContent-Type: "
                            b"application/json\r\nContent-Length: 1000\r\n\r\n{\"instances\"")
            time.sleep(0.2)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=30) == 0
            assert time.monotonic() - started < 5
            assert idle.recv(65536) == b""  # closed after the grace, unanswered
            assert stalled.recv(65536).startswith(b"HTTP/1.1 408")


def test_a_stalled_upload_ends_soon_after_shutdown_whatever_its_body_deadline():
    with server_process(ROOT / "models", AESERVE_BODY_TIMEOUT_S="600") as server, \
            socket.create_connection(address(server.url), timeout=30) as stalled:
        stalled.sendall(b"POST /anomaly-score HTTP/1.1\r\nHost: t\r\nContent-Type: "
                        b"application/json\r\nContent-Length: 1000\r\n\r\n{\"instances\"")
        time.sleep(0.2)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        status, headers, body = read_response(stalled)
        assert status == 408 and headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "body_timeout"
        assert server.process.wait(timeout=30) == 0
        assert time.monotonic() - started < 10  # the grace is 5 s


def test_a_request_sent_on_an_idle_connection_during_shutdown_is_answered():
    with (server_process(ROOT / "models") as server,
          socket.create_connection(address(server.url), timeout=10) as sock):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[0] == 200
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.4)  # the server is shutting down; the listener is closed
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        assert server.process.wait(timeout=30) == 0
