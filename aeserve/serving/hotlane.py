"""A lane for the inference routes that skips FastAPI's middleware stack.

Why: every request FastAPI serves passes ServerErrorMiddleware, FastAPI's telemetry and body-limit
layers, ExceptionMiddleware, an AsyncExitStack and the router's regular expressions, one route after
another. Together they cost more than decoding, scoring and encoding a one-row request. The
inference routes are POST-only raw ASGI endpoints (aeserve/serving/asgi.py) that render their own
typed errors, so none of those layers does anything for them. The app hands them straight to its
own middleware (the same list FastAPI wraps around its router: request id, API key, metrics,
access log, CORS) and the endpoint; every other request, and every other method on these paths,
goes through FastAPI as before.

Matching is by path segments against the same `Route` templates FastAPI knows, so the two lanes
cannot disagree about which paths exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Template = tuple[tuple[str | None, ...], tuple[str, ...], ASGIApp]  # literals, params, endpoint


def _template(path: str, endpoint: ASGIApp) -> Template:
    """'/models/{name}/encode' -> (('', 'models', None, 'encode'), ('name',), endpoint)."""
    segments = path.split("/")
    literals = tuple(None if s.startswith("{") else s for s in segments)
    params = tuple(s[1:-1] for s in segments if s.startswith("{"))
    return literals, params, endpoint


class HotLane:
    """Dispatches POSTs on the inference routes; `app` is the stack they run through."""

    def __init__(self, routes: Sequence[Route], wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        self._by_length: dict[int, list[Template]] = {}
        for route in routes:
            template = _template(route.path, route.endpoint)
            self._by_length.setdefault(len(template[0]), []).append(template)
        self.app = wrap(self._dispatch)

    def match(self, path: str) -> tuple[ASGIApp, dict[str, str]] | None:
        """The endpoint and path parameters for `path`, or None when it is not a hot route."""
        segments = path.split("/")
        for literals, names, endpoint in self._by_length.get(len(segments), ()):
            values = []
            for literal, segment in zip(literals, segments, strict=True):
                if literal is None:
                    if not segment:
                        break
                    values.append(segment)
                elif literal != segment:
                    break
            else:
                return endpoint, dict(zip(names, values, strict=True))
        return None

    @staticmethod
    async def _dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        # Typed errors are rendered by the endpoint; anything else is a bug, answered by the
        # request middleware around this lane as on FastAPI's.
        await scope["endpoint"](scope, receive, send)
