"""uvicorn's HTTP protocol with a deadline on the request head, and a shutdown that loses nothing.

uvicorn times out idle keep-alive connections, but not a connection that sends nothing after it
opens, nor one that sends its request line and headers a byte at a time: each holds a file
descriptor and a slot of the concurrency limit for as long as the client likes (slowloris). Here
every request's head (request line and headers) must be complete within AESERVE_HEADER_TIMEOUT_S of
the connection opening or of the request's first byte; otherwise the server answers 408 with a
JSON body and closes the connection. The body has its own deadline (`serving/asgi.py`).

On shutdown uvicorn closes every kept-alive connection that has no request in progress at once,
but "no request in progress" only means none has been parsed yet: a request the client has sent
and the server has not read is lost (the client gets a reset, and cannot know whether it was
served). Here such a connection stays open `SHUTDOWN_IDLE_GRACE_S` longer; a request that arrives
meanwhile is answered with `Connection: close`, and a connection that stays silent is closed.
A request already in progress is answered with `Connection: close`, as uvicorn does; one whose
body is still arriving has `SHUTDOWN_UPLOAD_GRACE_S` to finish it, then gets a 408.
"""

from __future__ import annotations

import asyncio
from functools import cache

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aeserve.serving.settings import Settings


@cache
def head_timeout_s() -> float:
    """AESERVE_HEADER_TIMEOUT_S, read once per process (each worker reads its environment)."""
    return Settings().header_timeout_s


def timeout_response(code: str, message: str) -> bytes:
    """A whole HTTP 408 answer with our JSON error body, written straight to the transport:
    these answers go out where no ASGI request cycle can send one."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


_HEAD_TIMEOUT = timeout_response("header_timeout",
                                 "the request line and headers did not arrive in time")


#: How long an idle kept-alive connection stays open after shutdown begins, for a request that
#: is already on its way. Clients that keep a connection busy send their next request within
#: microseconds of an answer; one idle for longer is closed after this.
SHUTDOWN_IDLE_GRACE_S = 1.0
#: How long a request whose body is still arriving when shutdown begins may take to finish it
#: (its own AESERVE_BODY_TIMEOUT_S still applies if sooner); then it gets a 408 and the connection
#: closes, so a stalled upload cannot hold the shutdown.
SHUTDOWN_UPLOAD_GRACE_S = 5.0

_UPLOAD_TIMEOUT = timeout_response(
    "body_timeout", "the server is shutting down and the body had not arrived; send the request "
    "again")


class ServerProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose request heads must arrive within `head_timeout_s()`, and whose
    shutdown answers requests already on their way."""

    _head_timer: asyncio.TimerHandle | None = None
    _receiving_head = False
    _shutting_down = False
    _grace_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving_head = True
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._receiving_head = False
        super().on_headers_complete()
        if self._shutting_down and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with Connection: close, then closed

    def shutdown(self) -> None:
        """Called by uvicorn when the server shuts down."""
        self._shutting_down = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            if self.cycle.more_body:  # its body is still arriving
                self._grace_timer = self.loop.call_later(SHUTDOWN_UPLOAD_GRACE_S,
                                                         self._end_unfinished_upload)
        elif not self._receiving_head:  # idle: a request may be on its way
            self._grace_timer = self.loop.call_later(SHUTDOWN_IDLE_GRACE_S, self._close_if_idle)

    def _end_unfinished_upload(self) -> None:
        self._grace_timer = None
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_started:
            self._answer_and_close(_UPLOAD_TIMEOUT)

    def _close_if_idle(self) -> None:
        self._grace_timer = None
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self._receiving_head and not self.transport.is_closing():
            self.transport.close()

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(head_timeout_s(), self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._answer_and_close(_HEAD_TIMEOUT)

    def _answer_and_close(self, response: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()
