"""Typed errors: each carries the server's HTTP status, its stable error `code` and its message.

The server answers every error as `{"error": {"code": ..., "message": ..., ...detail}}`; the
exception class follows the status (and, for 404, the code), so callers catch types, never compare
strings. `ConnectionFailed` is raised when no answer came back, after the retries.
"""

from __future__ import annotations

from typing import Any


class AeserveError(Exception):
    """Base of every error the client raises."""


class ConnectionFailed(AeserveError):
    """The server could not be reached, or the connection broke, on every attempt."""


class APIError(AeserveError):
    """The server answered with an error status."""

    def __init__(self, status: int, code: str, message: str, detail: dict[str, Any] | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail or {}
        self.request_id = request_id


class BadRequest(APIError):
    """400: the body is not JSON, or not `.npy` (`malformed_json`)."""


class Unauthorized(APIError):
    """401: the server has an API key and the request did not carry it (`unauthorized`)."""


class Forbidden(APIError):
    """403: e.g. an admin route on a server without an API key (`admin_disabled`)."""


class NotFound(APIError):
    """404: no such model, version or route."""


class UnknownModel(NotFound):
    """404 `unknown_model`; `detail["available"]` lists the served models."""


class UnknownVersion(NotFound):
    """404 `unknown_version`."""


class PayloadTooLarge(APIError):
    """413: too many rows (`too_many_rows`) or too many bytes (`body_too_large`)."""


class UnsupportedMediaType(APIError):
    """415: the server does not take this content type."""


class InvalidInstances(APIError):
    """422: the rows are not a matrix of finite numbers of the model's width; the message names
    the row and column (`wrong_width`, `non_finite`, `feature_mismatch`, ...)."""


class ServerError(APIError):
    """5xx: the server's own failure."""


class ModelNotReady(ServerError):
    """503: the model exists but no version is ready (`model_not_ready`), or the server drains."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 413: PayloadTooLarge,
    415: UnsupportedMediaType, 422: InvalidInstances, 503: ModelNotReady,
}
_BY_CODE: dict[str, type[APIError]] = {"unknown_model": UnknownModel,
                                       "unknown_version": UnknownVersion}


def error_for(status: int, payload: Any, request_id: str | None = None,
              note: str = "") -> APIError:
    """The exception for an error answer; `payload` is its decoded JSON body, if any."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code", f"http_{status}"))
        message = str(error.get("message", ""))
        detail = {k: v for k, v in error.items() if k not in ("code", "message")}
    else:  # the V2 routes answer {"error": "<message>"}; a proxy may answer anything
        code, message, detail = f"http_{status}", str(error or payload or ""), {}
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    return cls(status, code, message + note, detail, request_id)
