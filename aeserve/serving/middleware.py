"""One ASGI middleware for what every request needs: a request id, the API key, a log line and
the request metrics.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: it adds no task or stream copy per request.
Route handlers leave `model`, `version`, `endpoint` and `rows` in `request.state`; the middleware
reads them once the response is sent, so metric labels come from what was really served.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import re
import secrets
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aeserve.serving.logs import AccessLog, request_id
from aeserve.serving.metrics import Metrics
from aeserve.serving.settings import Settings

log = logging.getLogger("aeserve")

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
ADMIN_PREFIXES = ("/admin/", "/v2/repository/")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


class RequestIds:
    """32 hex digits: a random per-process prefix and a counter.

    Unique across processes and restarts like a uuid4, for a tenth of its cost (uuid4 reads the
    OS's random source and builds a UUID object on every request).
    """

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


def is_admin(path: str) -> bool:
    return path.startswith(ADMIN_PREFIXES)


def error_body(path: str, code: str, message: str) -> bytes:
    """Our error shape, or the Open Inference Protocol's `{"error": "..."}` under /v2."""
    if path.startswith("/v2"):
        return orjson.dumps({"error": message})
    return orjson.dumps({"error": {"code": code, "message": message}})


class InFlight:
    """The requests a worker has in progress, shared by every copy of the middleware (each lane
    and each hot route builds its own): the limit is the worker's, not a route's."""

    def __init__(self, limit: int) -> None:
        self.count = 0
        self.limit = limit


class RequestMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics,
                 in_flight: InFlight | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = AccessLog()
        self.ids = RequestIds()
        key = settings.api_key.get_secret_value() if settings.api_key else None
        self.api_key = key.encode() if key else None
        #: Requests in progress in this worker (heads complete), and their limit.
        self.in_flight = in_flight or InFlight(settings.max_concurrency)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        headers = dict(scope["headers"])
        supplied = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = supplied if supplied and _CLIENT_ID.match(supplied) else self.ids.next()
        token = request_id.set(rid)
        scope.setdefault("state", {})
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                extra = [(b"x-request-id", rid.encode())]
                app = scope.get("app")
                if getattr(app, "draining", False) and app.settings.drain_seconds > 0:
                    # draining: the client opens its next request elsewhere (a load balancer
                    # stops sending here), rather than on a connection the server will close.
                    # Without a drain the listener closes within 0.1 s: a client sent to
                    # reconnect would meet a closing listener, so kept-alive connections carry
                    # on, and the shutdown of serving/protocol.py answers what they send.
                    extra.append((b"connection", b"close"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        in_flight = self.in_flight
        in_flight.count += 1
        try:
            # health answers stay cheap and on time: an overloaded worker is alive
            refusal = (self._overload() if in_flight.count > in_flight.limit
                       and scope["path"] not in PUBLIC_PATHS
                       else self._refusal(scope["path"], headers))
            if refusal is not None:
                await self._send_error(send_with_id, scope["path"], *refusal)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            # A bug, on any route: logged with its traceback; the client gets a 500 that names
            # the request id, not the exception's text, and keeps its connection (an exception
            # escaping to the server would close it).
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:
                raise  # too late for an answer of our own
            await self._send_error(send_with_id, scope["path"], 500, "internal_error",
                                   f"internal error; the server log has its details under "
                                   f"request id {rid}")
        finally:
            in_flight.count -= 1
            self._record(scope, status, time.perf_counter() - began)
            request_id.reset(token)

    def _overload(self) -> tuple[int, str, str]:
        return (503, "overloaded", f"the server has {self.in_flight.limit} requests in "
                                   "progress (AESERVE_MAX_CONCURRENCY): try again shortly")

    def _refusal(self, path: str, headers: dict[bytes, bytes]) -> tuple[int, str, str] | None:
        if path in PUBLIC_PATHS:
            return None
        if self.api_key is None:
            if is_admin(path):
                return (403, "admin_disabled",
                        "admin and repository routes need AESERVE_API_KEY to be set")
            return None
        if not self._authorized(headers):
            return (401, "unauthorized",
                    "missing or wrong API key: send 'Authorization: Bearer <key>' or "
                    "'X-API-Key: <key>'")
        return None

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        supplied = headers.get(b"x-api-key")
        if supplied is None:
            scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
            supplied = credentials.strip() if scheme.lower() == b"bearer" else b""
        return hmac.compare_digest(supplied, self.api_key)

    @staticmethod
    async def _send_error(send: Send, path: str, status: int, code: str, message: str) -> None:
        body = error_body(path, code, message)
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="aeserve"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        state = scope.get("state", {})
        route_path = getattr(scope.get("route"), "path", None)  # the template, not the raw path
        endpoint = state.get("endpoint") or route_path or "other"
        model = state.get("model", "")
        version = str(state.get("version", ""))
        labels = (model, version, endpoint, str(status))
        self.metrics.record_request(*labels, elapsed)
        if endpoint != "health":
            self.access_log.write(f"{scope['method']} {scope['path']} {status}", {
                "method": scope["method"], "path": scope["path"], "status": status,
                "duration_ms": round(1000 * elapsed, 3), "endpoint": endpoint,
                "model": model or None, "version": version or None,
                "rows": state.get("rows")})
