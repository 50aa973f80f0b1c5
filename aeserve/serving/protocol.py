"""uvicorn's HTTP protocol with a deadline on the request head.

uvicorn times out idle keep-alive connections, but not a connection that sends nothing after it
opens, nor one that sends its request line and headers a byte at a time: each holds a file
descriptor and a slot of the concurrency limit for as long as the client likes (slowloris). Here
every request's head (request line and headers) must be complete within AESERVE_HEADER_TIMEOUT_S of
the connection opening or of the request's first byte; otherwise the server answers 408 with a
JSON body and closes the connection. The body has its own deadline (`serving/asgi.py`).
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

_BODY = orjson.dumps({"error": {"code": "header_timeout",
                                "message": "the request line and headers did not arrive in time"}})
_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
             b"content-length: " + str(len(_BODY)).encode() + b"\r\nconnection: close\r\n\r\n"
             + _BODY)


class HeadDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose request heads must arrive within `head_timeout_s()`."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(head_timeout_s(), self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.write(_RESPONSE)
            self.transport.close()
