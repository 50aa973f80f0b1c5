"""Typed request errors. Each maps to one HTTP status and a stable `code` clients can branch on.

The JSON body is always `{"error": {"code": ..., "message": ..., ...detail}}`, whichever layer
raised it (our decoding, FastAPI's validation, routing).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.detail}}


class MalformedJSON(ServiceError):
    code = "malformed_json"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class BodyTooLarge(ServiceError):
    status = 413
    code = "body_too_large"


class BodyTimeout(ServiceError):
    """The body did not arrive in time (AESERVE_BODY_TIMEOUT_S): the connection is closed, since
    the rest of the upload may still be on its way."""

    status = 408
    code = "body_timeout"


class TooManyRows(ServiceError):
    status = 413
    code = "too_many_rows"


class InvalidInstances(ServiceError):
    """The body parsed, but its rows cannot be a [N, d] matrix of finite numbers."""

    status = 422
    code = "invalid_instances"


class MissingInstances(InvalidInstances):
    code = "missing_instances"


class EmptyInstances(InvalidInstances):
    code = "empty_instances"


class WrongWidth(InvalidInstances):
    code = "wrong_width"


class RaggedRows(InvalidInstances):
    code = "ragged_rows"


class NonNumeric(InvalidInstances):
    code = "non_numeric"


class NonFinite(InvalidInstances):
    code = "non_finite"


class NonFiniteResult(InvalidInstances):
    """Finite inputs whose outputs are not: values so large that the model's float32 arithmetic
    overflows (a squared error above about 3.4e38). Named by row, never sent as `null`."""

    code = "non_finite_result"


class FeatureMismatch(InvalidInstances):
    code = "feature_mismatch"


class InvalidIds(InvalidInstances):
    """The body's "ids" is not one string or integer per row."""

    code = "invalid_ids"


class PredictionLogOff(ServiceError):
    """Feedback needs the prediction log (AESERVE_PREDICTION_LOG) to join labels to."""

    status = 409
    code = "prediction_log_off"


class PredictionLogUnwritable(ServiceError):
    """The log's folder refused the labels (read-only, full): nothing was stored, try again."""

    status = 503
    code = "prediction_log_unwritable"


class InvalidParameter(ServiceError):
    status = 422
    code = "invalid_parameter"


class UnknownModel(ServiceError):
    status = 404
    code = "unknown_model"


class UnknownVersion(ServiceError):
    status = 404
    code = "unknown_version"


class ModelNotReady(ServiceError):
    status = 503
    code = "model_not_ready"


class DriftUnavailable(ServiceError):
    """The version has no drift window: its card predates the drift reference (schema version
    1), or the server runs with AESERVE_DRIFT_WINDOW_ROWS=0."""

    status = 409
    code = "drift_unavailable"


class NoShadow(ServiceError):
    """The model's config.json names no shadow version, or the shadow cannot compare (not
    ready, or no active version to compare with)."""

    status = 409
    code = "no_shadow"


class TooManySeries(ServiceError):
    """A stream request names more series than the server keeps (AESERVE_STREAM_MAX_SERIES):
    some would be dropped before their own readings were scored."""

    status = 413
    code = "too_many_series"


class StreamNeedsOneWorker(ServiceError):
    """Per-series state lives in one process: with several workers, a series' readings would
    land in different ones and its windows would be cut wrong."""

    status = 409
    code = "stream_needs_one_worker"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ServiceError):
    status = 405
    code = "method_not_allowed"
