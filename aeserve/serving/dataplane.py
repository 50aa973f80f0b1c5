"""The data plane: every inference request, whatever its protocol, takes the same steps.

    resolve the version -> decode the body -> batch -> run -> annotate -> encode the answer

The core routes (`/encode`, `/reconstruct`, `/anomaly-score`) and the Open Inference Protocol's
`infer` call `DataPlane.infer` and `DataPlane.infer_v2`; they differ only in their codecs. Where a
body is decoded (event loop, decoder process, codec thread) is `BodyDecoder`'s business; the graph
runs in a worker thread, merged with concurrent requests by the version's `MicroBatcher`, which is
made when the version loads (`batcher_factory`) and closed when it goes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from aeserve.artifact.card import ModelCard
from aeserve.artifact.prediction_log import normalize_ids
from aeserve.artifact.scores import explanations, p_values, percentiles, verdicts
from aeserve.artifact.session import ModelSession
from aeserve.serving import v2_codec
from aeserve.serving.batching import MicroBatcher
from aeserve.serving.codecs import (
    BINARY_TYPE,
    NPY_TYPE,
    decode_request,
    dumps,
    media_type,
)
from aeserve.serving.decoding import BodyDecoder
from aeserve.serving.drift import DriftMonitor, DriftSettings
from aeserve.serving.errors import NonFiniteResult, UnknownVersion
from aeserve.serving.logs import request_id
from aeserve.serving.metrics import Metrics, observe_many
from aeserve.serving.prediction_log import PredictionLog, PredictionLogSettings
from aeserve.serving.repository import ModelRepository, ModelVersion
from aeserve.serving.settings import Settings
from aeserve.serving.shadow import Shadow

PRIMARY_OUTPUT = {"encode": "embedding", "reconstruct": "reconstruction",
                  "anomaly-score": "score"}


@dataclass(frozen=True)
class ScoreOptions:
    """Query parameters of /anomaly-score: a threshold override and explanations."""

    threshold: float | None = None
    explain: bool = False
    top_k: int = 3

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("score", "feature_errors") if self.explain else ("score",)


@dataclass(frozen=True)
class Encoded:
    body: bytes
    media_type: str
    headers: dict[str, str]


def batcher_factory(settings: Settings, metrics: Metrics, executor: Executor
                    ) -> Callable[[str, int, ModelCard, ModelSession], MicroBatcher]:
    """What the repository calls when a version loads: the version's own batcher, whose runs
    happen in `executor` and are annotated and counted once per merged batch."""

    def make(name: str, version: int, card: ModelCard, session: ModelSession) -> MicroBatcher:
        labels = (name, str(version))
        batch_rows = metrics.batch_rows.labels(*labels)
        inference_seconds = metrics.inference_seconds.labels(*labels)
        queue_seconds = metrics.queue_seconds.labels(*labels)

        def record(rows: int, seconds: float, waits: list[float]) -> None:
            batch_rows.observe(rows)
            inference_seconds.observe(seconds)
            observe_many(queue_seconds, np.asarray(waits))

        drift = None
        if card.reference is not None and settings.drift_window_rows > 0:
            drift = DriftMonitor(card, DriftSettings(settings.drift_window_rows,
                                                     settings.drift_sample_rows),
                                 publish=lambda m: metrics.publish_drift(name, version, m))

        def run(rows: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
            results = mark_non_finite(session.run(rows, outputs))
            if "score" in results:
                results = annotate_scores(name, version, card, results, metrics)
            if drift is not None:
                drift.observe(rows, results.get("score"))
            return results

        return MicroBatcher(run, executor, max_rows=settings.batch_max_rows,
                            max_delay_s=settings.batch_max_delay_ms / 1000.0, on_batch=record,
                            drift=drift)

    return make


def annotate_scores(name: str, version: int, card: ModelCard, outputs: dict[str, np.ndarray],
                    metrics: Metrics) -> dict[str, np.ndarray]:
    """Add what the scores mean (verdicts, percentiles) and count them for alerting.

    Runs once per merged batch in the worker thread, not once per request on the event loop.
    """
    scores = outputs["score"]
    flagged = verdicts(scores, card.threshold)
    metrics.observe_scores(name, version, scores, card.threshold, flagged)
    percentile = percentiles(scores, card.score_quantiles)
    return {**outputs, "is_anomaly": flagged, "percentile": percentile.round(3),
            "p_value": p_values(scores, card.score_quantiles, percentile)}


def wants(accept: str | None) -> str:
    """The response format the client asked for: JSON unless it names a binary type."""
    for part in (accept or "").split(","):
        kind = media_type(part)
        if kind in (BINARY_TYPE, NPY_TYPE):
            return kind
    return "application/json"


def threshold_in_force(card: ModelCard, override: float | None) -> float:
    """The threshold an answer is judged by: the request's own, else the card's (in which
    config.json's managed threshold is already in force)."""
    return card.threshold if override is None else override


def verdicts_in_force(card: ModelCard, outputs: dict[str, np.ndarray],
                      override: float | None) -> tuple[float, np.ndarray]:
    """(threshold, verdicts) of an answer: the card's threshold and the verdicts the batch
    already holds, or the request's own threshold (the card left unchanged). Every protocol's
    answer and the prediction log take them from here, so they cannot disagree."""
    threshold = threshold_in_force(card, override)
    if override is None:  # the batch judged its rows by the card's threshold already
        return threshold, outputs["is_anomaly"]
    return threshold, verdicts(outputs["score"], threshold)


def encode_response(operation: str, entry: ModelVersion, outputs: dict[str, np.ndarray],
                    accept: str | None, options: ScoreOptions = ScoreOptions(),
                    ids: list | None = None) -> Encoded:
    """JSON by default; raw float32 rows or `.npy` when the client's Accept header asks. The
    request's ids, if it sent any, come back in the JSON answer."""
    fmt = wants(accept)
    result: dict[str, Any]
    threshold = entry.card.threshold
    if operation == "anomaly-score":
        threshold, flagged = verdicts_in_force(entry.card, outputs, options.threshold)
        result = {"scores": outputs["score"], "threshold": threshold, "is_anomaly": flagged,
                  "percentiles": outputs["percentile"], "p_values": outputs["p_value"]}
        if options.explain:
            result["explanations"] = explanations(outputs["feature_errors"],
                                                  entry.card.feature_names, options.top_k)
    else:
        result = {{"encode": "embeddings", "reconstruct": "reconstructions"}[operation]:
                  outputs[PRIMARY_OUTPUT[operation]]}
    if ids is not None:
        result["ids"] = ids
    headers = {"X-Model": entry.name, "X-Model-Version": str(entry.version)}
    if fmt == "application/json":
        return Encoded(dumps({"model": entry.name, "version": entry.version, **result}),
                       "application/json", headers)
    primary = np.ascontiguousarray(outputs[PRIMARY_OUTPUT[operation]], dtype="<f4")
    headers["X-Shape"] = ",".join(str(n) for n in primary.shape)
    if operation == "anomaly-score":
        headers["X-Threshold"] = repr(threshold)
    if fmt == BINARY_TYPE:
        return Encoded(primary.tobytes(), BINARY_TYPE, headers)
    array: np.ndarray = primary
    if operation == "anomaly-score":  # one record per row: score, verdict, percentile, p
        array = np.empty(len(primary), dtype=[("score", "<f4"), ("is_anomaly", "?"),
                                              ("percentile", "<f4"), ("p_value", "<f8")])
        array["score"], array["is_anomaly"] = primary, result["is_anomaly"]
        array["percentile"], array["p_value"] = result["percentiles"], result["p_values"]
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return Encoded(buffer.getvalue(), NPY_TYPE, headers)


class DataPlane:
    """Resolve, decode, batch, run, annotate, encode: the one implementation every protocol's
    inference route calls. Routes only read the body and render the answer."""

    def __init__(self, settings: Settings, repository: ModelRepository, metrics: Metrics,
                 decoder: BodyDecoder) -> None:
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self.decoder = decoder
        self.shadow = Shadow(repository, metrics)
        self.prediction_log = None if settings.prediction_log is None else PredictionLog(
            PredictionLogSettings(settings.prediction_log, settings.prediction_log_features,
                                  settings.prediction_log_max_bytes,
                                  settings.prediction_log_flush_s,
                                  max_label_bytes=settings.prediction_log_max_label_bytes,
                                  search_bytes=settings.prediction_log_search_bytes,
                                  max_pending_rows=settings.prediction_log_max_pending_rows,
                                  max_pending_bytes=settings.prediction_log_max_pending_bytes),
            metrics)

    def resolve(self, name: str | None, version: str | None) -> ModelVersion:
        """The ready version a request addresses (default model, active version, or pinned)."""
        return resolve(self.repository, name, version)

    async def infer(self, operation: str, entry: ModelVersion, body: bytes,
                    content_type: str | None, accept: str | None,
                    options: ScoreOptions = ScoreOptions()) -> tuple[Encoded, int]:
        """`/encode`, `/reconstruct` or `/anomaly-score` on `entry`: (the answer, rows)."""
        names = entry.card.feature_names
        if self.decoder.decodes_inline(body, content_type):  # small: no hand-off at all
            rows, ids = decode_request(body, content_type, names, self.settings.max_rows)
        else:
            rows, ids = await self.decoder.instances(body, content_type, names,
                                                     self.settings.max_rows)
        wanted = options.outputs if operation == "anomaly-score" else (PRIMARY_OUTPUT[operation],)
        outputs = await entry.batcher.submit(rows, wanted)
        require_finite(outputs, wanted)
        self.metrics.rows_counter(entry.name, entry.version, operation).inc(len(rows))
        if "is_anomaly" in outputs:
            self.shadow.offer(entry, rows, outputs["is_anomaly"])
            self.log(entry, ids, outputs, rows,
                     *verdicts_in_force(entry.card, outputs, options.threshold))
        # what the JSON answer holds (explanations add every row's feature errors); binary
        # answers are one copy of an array, never worth a thread
        size = outputs[wanted[0]].size if len(wanted) == 1 else sum(
            outputs[name].size for name in wanted)
        if self.decoder.encodes_inline(size) or wants(accept) != "application/json":
            encoded = encode_response(operation, entry, outputs, accept, options, ids)
        else:
            encoded = await self.decoder.in_thread(encode_response, operation, entry, outputs,
                                                   accept, options, ids)
        return encoded, len(rows)

    async def infer_v2(self, entry: ModelVersion, body: bytes,
                       header_length: str | None) -> tuple[Encoded, int]:
        """The Open Inference Protocol's `infer` on `entry`: (the answer, rows)."""
        request = await self.decoder.v2(body, header_length, entry.card.input_dim,
                                        self.settings.max_rows)
        wanted = request.graph_outputs
        results = await entry.batcher.submit(request.rows, wanted)
        require_finite(results, wanted)
        self.metrics.rows_counter(entry.name, entry.version, "v2-infer").inc(len(request.rows))
        threshold = threshold_in_force(entry.card, request.threshold)
        if "is_anomaly" in results:
            self.shadow.offer(entry, request.rows, results["is_anomaly"])
            threshold, flagged = verdicts_in_force(entry.card, results, request.threshold)
            results = {**results, "is_anomaly": flagged}
            self.log(entry, request.ids, results, request.rows, threshold, flagged)
        size = sum(results[name].size for name, binary in request.wanted if not binary)
        payload, headers, kind = await self.decoder.encode(
            size, v2_codec.encode_response, entry.name, entry.version, threshold, request,
            results)
        return Encoded(payload, kind, headers), len(request.rows)

    def log(self, entry: ModelVersion, ids: list | None, outputs: dict[str, np.ndarray],
            rows: np.ndarray, threshold: float, flagged: np.ndarray) -> None:
        """Hand an answered batch to the prediction log, when there is one, with the threshold
        and verdicts the client was given."""
        if self.prediction_log is not None:
            self.prediction_log.record(
                entry.name, entry.version, None if ids is None else normalize_ids(ids),
                request_id.get(), outputs["score"], threshold, flagged, rows)


#: Added to a batch's outputs when some rows overflowed: [rows, outputs] booleans, column k true
#: where the batch's k-th output (in its order) is not finite. Sliced per request, as they are.
NON_FINITE = "non_finite_output"


def mark_non_finite(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Once per merged batch, in the worker thread: mark the rows whose outputs overflowed.

    Inputs are checked finite when decoded, but finite values can still overflow the graph's
    float32 arithmetic: a feature near 1e20 has a squared error beyond float32's range. A
    float64 sum of float32 values is finite exactly when every value is: one pass per output.
    """
    if all(np.isfinite(values.sum(dtype=np.float64)) for values in outputs.values()):
        return outputs
    marks = np.column_stack([~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
                             for values in outputs.values()])
    return {**outputs, NON_FINITE: marks}


def require_finite(outputs: dict[str, np.ndarray], names: Sequence[str]) -> None:
    """A typed 422 naming this request's rows whose outputs overflowed, rather than `null` in
    a 200 (the rows were marked by `mark_non_finite`)."""
    marks = outputs.get(NON_FINITE)
    if marks is None:
        return
    order = list(outputs)  # the batch's outputs come first, in the order the marks have
    for name in names:
        rows = np.flatnonzero(marks[:, order.index(name)]).tolist()
        if rows:
            break
    else:
        return
    raise NonFiniteResult(
        f"{len(rows)} row(s) give a non-finite {name} (first: {rows[:10]}): their values "
        "are too large for the model's float32 arithmetic; scale them down",
        rows=rows[:100], output=name)


def resolve(repository: ModelRepository, name: str | None, version: str | None) -> ModelVersion:
    """The ready version that a path's model name and version segment (if any) address."""
    return repository.get(name, parse_version(version) if version is not None else None)


def parse_version(version: str) -> int:
    """A version path segment as a number, or a typed 404."""
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise UnknownVersion(f"version {version!r} is not a positive integer", version=version)
    return int(version)
