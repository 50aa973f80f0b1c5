"""The client's logic without I/O, shared by `Client` and `AsyncClient`.

Each operation is a generator that yields the `Request`s it needs and receives their responses
(any object with httpx.Response's `status_code`, `headers` and `content`); the sync and async
clients only drive it, send with retries, and sleep. So both behave alike by construction.

Transport: rows that form a numeric matrix go as raw little-endian float32 (`application/
octet-stream`) and the answer comes back binary (`.npy` records for scores, float32 for the
rest); anything else (ragged rows, text, a server that answers 415 to binary bodies) goes as JSON,
so the server's own checks name the problem. A call with more rows than `max_rows` is split into
several requests, all answered by the same model version: the first answer's version is pinned for
the rest. Named rows (a DataFrame, dicts) are put in the model's feature order with the feature
names of the version that answers.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np

from aeserve.client.errors import AeserveError, InvalidInstances, error_for
from aeserve.client.results import (
    AnomalyScores,
    Embeddings,
    FeedbackResult,
    ModelInfo,
    ModelSummary,
    Reconstructions,
    SeriesScores,
    StreamResult,
    explanation,
    model_summary,
)

BINARY = "application/octet-stream"
NPY = "application/x-npy"
JSON = "application/json"
RETRY_STATUSES = frozenset({503})
OPERATIONS = ("encode", "reconstruct", "anomaly-score")


@dataclass(frozen=True)
class ScoreOptions:
    """`anomaly_score`'s options, sent as the query string the server reads: a threshold for this
    call instead of the model's, and explanations with the `top_k` features of each row."""

    threshold: float | None = None
    explain: bool = False
    top_k: int | None = None
    #: one id per row (strings or integers): echoed, and logged by a server that keeps a
    #: prediction log, so that labels can be sent back for them (`feedback`)
    ids: Sequence[str | int] | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and not self.explain:
            raise ValueError("top_k chooses how many features explain a row: pass explain=True")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")

    def query(self) -> dict[str, str]:
        query = {}
        if self.threshold is not None:
            query["threshold"] = repr(float(self.threshold))
        if self.explain:
            query["explain"] = "true"
        if self.top_k is not None:
            query["top_k"] = str(int(self.top_k))
        return query


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Whether a request whose connection broke may be sent again. Not a stream's: the server
    #: may have taken its readings into the series' windows, and would take them twice.
    resend: bool = True


def retry_delay(attempt: int, backoff: float, max_backoff: float, response: Any = None) -> float:
    """Seconds before retry `attempt` (0-based): the server's Retry-After when it sends one,
    else exponential backoff with jitter (between half and all of `backoff * 2**attempt`)."""
    if response is not None:
        after = response.headers.get("retry-after", "")
        if after.replace(".", "", 1).isdigit():
            return min(float(after), max_backoff)
    return min(max_backoff, backoff * 2 ** attempt) * (0.5 + 0.5 * random.random())


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


# -- rows ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rows:
    """Rows ready to send: a float32 matrix when possible, else JSON-able rows."""

    matrix: np.ndarray | None = None
    instances: list | None = None
    ids: list | None = None  # one per row, sent beside the rows (JSON only)

    def __len__(self) -> int:
        return len(self.matrix) if self.matrix is not None else len(self.instances)

    def chunks(self, size: int) -> list[Rows]:
        if len(self) <= size:
            return [self]
        return [Rows(matrix=None if self.matrix is None else self.matrix[i:i + size],
                     instances=None if self.instances is None else self.instances[i:i + size],
                     ids=None if self.ids is None else self.ids[i:i + size])
                for i in range(0, len(self), size)]


def is_frame(rows: Any) -> bool:
    """A pandas (or pandas-like) DataFrame, recognised without importing pandas."""
    return hasattr(rows, "columns") and hasattr(rows, "to_numpy") and not isinstance(
        rows, np.ndarray)


def is_records(rows: Any) -> bool:
    return isinstance(rows, Mapping) or (isinstance(rows, Sequence) and len(rows) > 0
                                         and all(isinstance(r, Mapping) for r in rows))


def _float32(array: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # beyond float32: inf, which the server then names
        return np.ascontiguousarray(array, dtype="<f4")


def positional_rows(rows: Any) -> Rows:
    """Rows in the model's feature order: a 2-D array, a list of lists, or one row."""
    if isinstance(rows, np.ndarray):
        array = rows
    else:
        try:
            array = np.asarray(rows)
        except ValueError:  # ragged
            return Rows(instances=list(rows))
    if array.ndim == 1 and array.size and array.dtype.kind in "iuf":
        array = array[None, :]  # one row
    numeric = "iufb" if isinstance(rows, np.ndarray) else "iuf"
    if array.ndim == 2 and array.dtype.kind in numeric:
        return Rows(matrix=_float32(array))
    return Rows(instances=array.tolist() if isinstance(rows, np.ndarray) else list(rows))


def named_rows(rows: Any, names: list[str]) -> Rows:
    """A DataFrame (columns by name, any order, other columns ignored) or dicts of features."""
    if is_frame(rows):
        missing = [name for name in names if name not in rows.columns]
        if missing:
            raise InvalidInstances(422, "feature_mismatch",
                                   f"the DataFrame lacks the model's features {missing}",
                                   {"missing": missing})
        selected = rows[names]
        try:
            return Rows(matrix=_float32(selected.to_numpy(dtype=np.float64)))
        except (TypeError, ValueError):  # non-numeric cells: the server names row and feature
            return Rows(instances=selected.to_dict(orient="records"))
    records = [rows] if isinstance(rows, Mapping) else list(rows)
    expected = set(names)
    clean = all(record.keys() == expected and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
        for v in record.values()) for record in records)
    if clean:
        return Rows(matrix=_float32(np.array([[r[n] for n in names] for r in records],
                                             dtype=np.float64)))
    return Rows(instances=records)


def stream_rows(rows: Any) -> Any:
    """A series' new readings as the stream route takes them: a DataFrame or dicts as objects
    keyed by feature name, an array or lists of numbers as lists (1-D: one reading). Anything
    else goes as it is, and the server answers with the typed error that names the problem."""
    if is_frame(rows):
        return rows.to_dict(orient="records")
    if is_records(rows):
        return [rows] if isinstance(rows, Mapping) else list(rows)
    try:
        array = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):  # ragged, or not numbers
        return rows.tolist() if isinstance(rows, np.ndarray) else rows
    return (array[None, :] if array.ndim == 1 and array.size else array).tolist()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# -- answers ------------------------------------------------------------------------------------

def check(response: Any, note: str = "") -> None:
    """Raise the typed error of an error answer."""
    if response.status_code < 400:
        return
    try:
        payload = json.loads(response.content)
    except ValueError:
        payload = response.content.decode("utf-8", "replace")[:500]
    raise error_for(response.status_code, payload, response.headers.get("x-request-id"), note)


def parse_answer(operation: str, response: Any) -> AnomalyScores | Embeddings | Reconstructions:
    headers = response.headers
    kind = media_type(headers.get("content-type"))
    if kind == JSON:
        payload = json.loads(response.content)
        model, version = payload["model"], int(payload["version"])
        if operation == "anomaly-score":
            explained = payload.get("explanations")
            return AnomalyScores(model, version, float(payload["threshold"]),
                                 np.asarray(payload["scores"], dtype=np.float32),
                                 np.asarray(payload["is_anomaly"], dtype=bool),
                                 np.asarray(payload["percentiles"], dtype=np.float64),
                                 None if explained is None else [explanation(e)
                                                                 for e in explained],
                                 _optional(payload.get("p_values")), payload.get("ids"))
        key = "embeddings" if operation == "encode" else "reconstructions"
        values = np.asarray(payload[key], dtype=np.float32)
    else:
        model, version = headers["x-model"], int(headers["x-model-version"])
        if kind == NPY:
            values = np.load(io.BytesIO(response.content), allow_pickle=False)
        elif kind == BINARY:
            shape = tuple(int(n) for n in headers["x-shape"].split(","))
            values = np.frombuffer(response.content, dtype="<f4").reshape(shape)
        else:
            raise AeserveError(f"unexpected answer of type {kind!r} from {operation}")
        if operation == "anomaly-score":
            if values.dtype.names is None:
                raise AeserveError("the server answered scores without verdicts or percentiles")
            # float32 in the records: back to the 3 decimals of the JSON answer
            percentiles = np.round(values["percentile"].astype(np.float64), 3)
            return AnomalyScores(model, version, float(headers["x-threshold"]),
                                 values["score"].astype(np.float32), values["is_anomaly"],
                                 percentiles, None, _optional(
                                     values["p_value"] if "p_value" in values.dtype.names
                                     else None))
    if operation == "encode":
        return Embeddings(model, version, values)
    return Reconstructions(model, version, values)


def series_scores(answer: dict[str, Any]) -> SeriesScores:
    """One series of a stream answer; a reading without a window scores NaN."""
    return SeriesScores(
        series=answer["series"],
        scores=np.array([np.nan if s is None else s for s in answer["scores"]], np.float64),
        is_anomaly=list(answer["is_anomaly"]),
        smoothed=np.array([np.nan if s is None else s for s in answer["smoothed"]], np.float64),
        alarm=np.array(answer["alarm"], dtype=bool), events=list(answer["events"]),
        explanations=answer.get("explanations"))


def _optional(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float64)


def combine(parts: list):
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, AnomalyScores):
        return AnomalyScores(first.model, first.version, first.threshold,
                             np.concatenate([p.scores for p in parts]),
                             np.concatenate([p.is_anomaly for p in parts]),
                             np.concatenate([p.percentiles for p in parts]),
                             None if first.explanations is None
                             else [e for p in parts for e in p.explanations],
                             None if first.p_values is None
                             else np.concatenate([p.p_values for p in parts]),
                             None if first.ids is None else [i for p in parts for i in p.ids])
    if isinstance(first, Embeddings):
        return Embeddings(first.model, first.version,
                          np.concatenate([p.embeddings for p in parts]))
    return Reconstructions(first.model, first.version,
                           np.concatenate([p.reconstructions for p in parts]))


# -- operations ---------------------------------------------------------------------------------

def model_path(model: str | None, version: int | None) -> str:
    if model is None:
        if version is not None:
            raise ValueError("a version needs a model name")
        return ""
    path = f"/models/{quote(model, safe='')}"
    return path if version is None else f"{path}/versions/{int(version)}"


class Protocol:
    """One client's state (the transport it settled on, feature names it read) and operations."""

    def __init__(self, transport: str = "auto", max_rows: int = 8192) -> None:
        if transport not in ("auto", "binary", "json"):
            raise ValueError(f"transport must be auto, binary or json, got {transport!r}")
        if max_rows <= 0:
            raise ValueError(f"max_rows must be positive, got {max_rows}")
        self.transport = transport
        self.max_rows = max_rows
        self._features: dict[tuple[str, int | None], tuple[int, list[str]]] = {}

    # GET routes

    def models(self) -> Generator[Request, Any, list[ModelSummary]]:
        response = yield Request("GET", "/models")
        check(response)
        return [ModelSummary(**model_summary(m)) for m in json.loads(response.content)["models"]]

    def model(self, name: str) -> Generator[Request, Any, ModelInfo]:
        response = yield Request("GET", model_path(name, None))
        check(response)
        payload = json.loads(response.content)
        return ModelInfo(**model_summary(payload), providers=payload.get("providers", []),
                         card=payload.get("card"))

    def feedback(self, model: str, ids: Sequence[str | int], labels: Sequence[int]
                 ) -> Generator[Request, Any, FeedbackResult]:
        ids, labels = list(ids), [int(label) for label in labels]
        if len(ids) != len(labels):
            raise ValueError(f"{len(labels)} labels for {len(ids)} ids: give one label per id")
        response = yield Request("POST", f"{model_path(model, None)}/feedback",
                                 json.dumps({"ids": ids, "labels": labels}).encode(),
                                 {"content-type": JSON, "accept": JSON})
        check(response)
        payload = json.loads(response.content)
        return FeedbackResult(payload["model"], payload["received"], payload["matched"],
                              payload["unmatched"], payload["unmatched_ids"],
                              payload["outcomes"])

    def stream(self, model: str, readings: dict[str | int, Any], explain: bool = False
               ) -> Generator[Request, Any, StreamResult]:
        if not readings:
            raise ValueError("readings: give at least one series and its rows")
        streams = [{"series": series, "rows": stream_rows(rows)}
                   for series, rows in readings.items()]
        body = json.dumps({"streams": streams, "explain": explain}, default=_json_default)
        response = yield Request("POST", f"{model_path(model, None)}/stream", body.encode(),
                                 {"content-type": JSON, "accept": JSON}, resend=False)
        check(response)
        payload = json.loads(response.content)
        return StreamResult(payload["model"], payload["version"], payload["threshold"],
                            payload["window"], [series_scores(s) for s in payload["series"]])

    def ready(self) -> Generator[Request, Any, bool]:
        response = yield Request("GET", "/readyz")
        return response.status_code == 200

    def feature_names(self, model: str | None, version: int | None, refresh: bool = False
                      ) -> Generator[Request, Any, tuple[str, int, list[str]]]:
        """(model name, version, feature names) of a pinned version or the active one."""
        if model is None:
            response = yield Request("GET", "/models")
            check(response)
            model = json.loads(response.content)["default_model"]
            if model is None:
                raise AeserveError("the server has no default model")
        key = (model, version)
        if refresh or key not in self._features:
            response = yield Request("GET", model_path(model, version))
            check(response)
            payload = json.loads(response.content)
            if payload.get("card") is None:
                raise error_for(503, {"error": {
                    "code": "model_not_ready",
                    "message": f"model {model!r} has no ready version: {payload.get('error')}"}})
            card = payload["card"]
            self._features[key] = (card["version"], list(card["feature_names"]))
        found_version, names = self._features[key]
        return model, found_version, names

    # inference

    def infer(self, operation: str, rows: Any, model: str | None = None,
              version: int | None = None, options: ScoreOptions | None = None):
        """Generator of one call: every chunk of `rows`, answered by one model version."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
        if options is not None and operation != "anomaly-score":
            raise ValueError("threshold, explain and top_k are options of anomaly_score")
        named = is_frame(rows) or is_records(rows)
        names_version = None
        if named:
            model, names_version, names = yield from self.feature_names(model, version)
            prepared = named_rows(rows, names)
        else:
            prepared = positional_rows(rows)
        if options is not None and options.ids is not None:
            ids = list(options.ids)
            if len(ids) != len(prepared):
                raise ValueError(f"{len(ids)} ids for {len(prepared)} rows: give one id per row")
            prepared = Rows(prepared.matrix, prepared.instances, ids)
        parts = []
        for chunk in prepared.chunks(self.max_rows):
            part = yield from self._send(operation, chunk, model, version, options)
            if not parts and named and part.version != names_version:
                # another version became active after its feature names were read
                _, _, fresh = yield from self.feature_names(part.model, part.version)
                if fresh != names:
                    return (yield from self.infer(operation, rows, part.model, part.version,
                                                  options))
            model, version = part.model, part.version  # the rest of the call: this version
            parts.append(part)
        return combine(parts)

    def _request(self, operation: str, rows: Rows, model: str | None,
                 version: int | None, options: ScoreOptions | None = None) -> Request:
        path = f"{model_path(model, version)}/{operation}"
        query = options.query() if options is not None else {}
        if query:
            path = f"{path}?{urlencode(query)}"
        # explanations come in JSON only, and ids go in JSON only
        explain = options is not None and options.explain
        if (rows.matrix is not None and self.transport != "json" and not explain
                and rows.ids is None):
            accept = NPY if operation == "anomaly-score" else BINARY
            return Request("POST", path, rows.matrix.tobytes(),
                           {"content-type": BINARY, "accept": accept})
        instances = rows.matrix.tolist() if rows.matrix is not None else rows.instances
        payload: dict[str, Any] = {"instances": instances}
        if rows.ids is not None:
            payload["ids"] = rows.ids
        body = json.dumps(payload, default=_json_default).encode()
        return Request("POST", path, body, {"content-type": JSON, "accept": JSON})

    def _send(self, operation: str, rows: Rows, model: str | None, version: int | None,
              options: ScoreOptions | None = None):
        request = self._request(operation, rows, model, version, options)
        response = yield request
        binary = request.headers["content-type"] == BINARY
        if binary and response.status_code == 415 and self.transport == "auto":
            self.transport = "json"  # this server does not take binary bodies: JSON from now on
            response = yield self._request(operation, rows, model, version, options)
            binary = False
        note = ""
        if binary and response.status_code == 422:
            note = (f" (the client sent {len(rows)} rows of {rows.matrix.shape[1]} float32 "
                    f"values each)")
        check(response, note)
        return parse_answer(operation, response)
