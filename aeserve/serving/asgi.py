"""Raw ASGI endpoints for the hot routes (inference), and the helpers they share.

FastAPI's per-request machinery (dependency resolution, the exit stack, the request object, the
response class) costs more than scoring a one-row request. The inference routes are therefore plain
Starlette `Route`s whose endpoint is an ASGI callable: the router matches them, the exception
handlers still turn our typed errors into JSON, and everything else is done here directly. Their
OpenAPI description is added by `openapi_paths` functions in the route modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from aeserve.serving.errors import BodyTimeout, BodyTooLarge, ServiceError

Handler = Callable[[Scope, dict[bytes, bytes], Receive], Awaitable[tuple[bytes, str, dict]]]


def header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    """One request header as text, or None."""
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


async def read_body(headers: dict[bytes, bytes], receive: Receive, limit: int,
                    timeout_s: float | None = None) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes, and with
    408 when it has not all arrived `timeout_s` seconds after the call (a stalled upload must
    not hold a connection, and a shutdown, forever)."""
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body has {int(declared)} bytes; the limit is {limit}",
                           limit=limit)
    chunks: list[bytes] = []
    size = 0
    try:
        # One timer for the whole body (asyncio.wait_for per chunk would start a task each)
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"the body exceeds the limit of {limit} bytes",
                                       limit=limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {timeout_s:g} s",
                          received_bytes=size) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def request_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """`read_body` for a FastAPI route: its body bounded like the raw routes' (a route that
    declares a pydantic body would have FastAPI read and parse all of it on the event loop)."""
    return await read_body(dict(request.scope["headers"]), request.receive, limit, timeout_s)


async def send_response(send: Send, body: bytes, media_type: str,
                        headers: dict[str, str] | None = None, status: int = 200) -> None:
    raw = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    if headers:
        raw.extend((k.lower().encode(), v.encode()) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def error_json(path: str, error: ServiceError) -> bytes:
    """Our error body, or the Open Inference Protocol's `{"error": "..."}` under /v2."""
    if path.startswith("/v2"):
        return orjson.dumps({"error": error.message})
    return orjson.dumps(error.body(), default=str)


class Endpoint:
    """An ASGI endpoint around `handler(scope, headers, receive)`.

    The handler resolves the model, reads the body (`read_body`) and returns (body, media type,
    extra headers), or raises a `ServiceError`, which the endpoint renders itself, so it needs
    none of the app's exception layers (see aeserve/serving/hotlane.py). It leaves `endpoint`,
    `model`, `version` and `rows` in `scope["state"]` for the access log and the metrics.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})
        try:
            body, media_type, extra = await self.handler(scope, dict(scope["headers"]), receive)
        except ServiceError as error:
            closing = {"Connection": "close"} if isinstance(error, BodyTimeout) else None
            await send_response(send, error_json(scope["path"], error), "application/json",
                                closing, status=error.status)
            return
        await send_response(send, body, media_type, extra)
