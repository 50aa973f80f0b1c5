"""`Client`: the blocking client (httpx.Client)."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import httpx

from aeserve.client.errors import ConnectionFailed
from aeserve.client.protocol import (
    RETRY_STATUSES,
    Protocol,
    Request,
    ScoreOptions,
    retry_delay,
)
from aeserve.client.results import (
    AnomalyScores,
    Embeddings,
    FeedbackResult,
    ModelInfo,
    ModelSummary,
    Reconstructions,
    StreamResult,
)

DEFAULT_TIMEOUT = 30.0


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    """A client of an aeserve server.

    `rows` may be a 2-D numpy array or a list of lists in the model's feature order (one flat
    row is one row), a pandas DataFrame whose columns are matched to the model's features by
    name (any order; other columns are ignored), or dicts of named features. Errors are typed
    (`aeserve.client.errors`); 503 answers and broken connections are retried `retries` times with
    exponential backoff, 4xx answers never.

        with Client("http://127.0.0.1:8000") as client:
            result = client.anomaly_score(rows, model="pumps")
            print(result.anomalies, result.percentiles)
    """

    def __init__(self, base_url: str, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, *, retries: int = 3, backoff: float = 0.1,
                 max_backoff: float = 5.0, transport: str = "auto",
                 max_rows_per_request: int = 8192,
                 http_client: httpx.Client | None = None) -> None:
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self._protocol = Protocol(transport, max_rows_per_request)
        self._own_http = http_client is None
        self._http = http_client or httpx.Client(base_url=base_url, timeout=timeout)
        self._http.headers.update(auth_headers(api_key))

    # -- the API --

    def anomaly_score(self, rows: Any, model: str | None = None,
                      version: int | None = None, *, threshold: float | None = None,
                      explain: bool = False, top_k: int | None = None,
                      ids: Any = None) -> AnomalyScores:
        """Score, verdict and percentile of each row (the default model unless named).

        `threshold` judges this call's rows against it instead of the model's threshold;
        `explain` adds each row's `Explanation` (every feature's term of the score, and the
        `top_k` largest, 3 unless given). Explanations come as JSON: the call sends JSON then.
        `ids` (one string or integer per row) come back in `result.ids`, and a server with a
        prediction log records them, so labels can be sent back with `feedback`; they also
        make the call send JSON.
        """
        options = ScoreOptions(threshold, explain, top_k, ids)
        return self._run(self._protocol.infer("anomaly-score", rows, model, version, options))

    def encode(self, rows: Any, model: str | None = None,
               version: int | None = None) -> Embeddings:
        return self._run(self._protocol.infer("encode", rows, model, version))

    def reconstruct(self, rows: Any, model: str | None = None,
                    version: int | None = None) -> Reconstructions:
        return self._run(self._protocol.infer("reconstruct", rows, model, version))

    def stream(self, model: str, readings: dict[str | int, Any], *,
               explain: bool = False) -> StreamResult:
        """Readings of named series for a windowed (or any) model: each reading's score, verdict
        and alarm state, the series' last readings and alarm kept by the server between calls.
        `readings` maps each series to its new rows, oldest first. Not resent when the
        connection breaks (the server may have taken the readings already)."""
        return self._run(self._protocol.stream(model, readings, explain))

    def models(self) -> list[ModelSummary]:
        return self._run(self._protocol.models())

    def model(self, name: str) -> ModelInfo:
        return self._run(self._protocol.model(name))

    def feedback(self, model: str, ids: Any, labels: Any) -> FeedbackResult:
        """Labels for rows scored earlier with these `ids` (1: it was an anomaly, 0: it was
        not). Needs a server with a prediction log (AESERVE_PREDICTION_LOG)."""
        return self._run(self._protocol.feedback(model, ids, labels))

    def ready(self) -> bool:
        """True when the server is ready to answer (its default model is loaded)."""
        try:
            return self._run(self._protocol.ready())
        except ConnectionFailed:
            return False

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the driver --

    def _run(self, operation: Generator[Request, Any, Any]) -> Any:
        try:
            request = next(operation)
            while True:
                request = operation.send(self._send(request))
        except StopIteration as done:
            return done.value

    def _send(self, request: Request) -> httpx.Response:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(request.method, request.path,
                                              content=request.content, headers=request.headers)
            except httpx.TransportError as exc:
                if last or not request.resend:
                    raise ConnectionFailed(
                        f"{request.method} {request.path}: {type(exc).__name__}: {exc} "
                        f"(after {attempt + 1} attempt{'s' if attempt else ''}"
                        + ("" if request.resend else "; not resent: the server may have taken "
                                                     "it already") + ")") from exc
                time.sleep(retry_delay(attempt, self.backoff, self.max_backoff))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(retry_delay(attempt, self.backoff, self.max_backoff, response))
                continue
            return response
        raise AssertionError("unreachable")
