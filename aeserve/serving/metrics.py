"""Prometheus metrics, one registry per app (so tests can build several apps in one process).

Labels stay bounded: `model` and `version` are set only once a request resolved to a loaded model
(unknown names are counted under model=""), and `endpoint` is the operation, not the raw path.

With several workers, each process writes its samples to files in PROMETHEUS_MULTIPROC_DIR and
/metrics adds them up (prometheus-client's multi-process mode), whichever worker answers.

Scores are recorded as a ratio to the model's threshold (`score / threshold`): the histogram's
bucket at 1.0 is the threshold of every model, so one alert rule and one dashboard panel fit all
models, however their raw scores are scaled.
"""

from __future__ import annotations

import os

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

#: Set (by `aeserve serve` when AESERVE_WORKERS > 1) before prometheus-client is imported.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Add a whole array to one labelled histogram child in one pass.

    `Histogram.observe` takes one value per call (about 2 microseconds each: 8 ms for a 4,096-row
    request). This fills the same per-bucket values `observe` fills, counted with one
    `searchsorted` and one `bincount`, so it works in multi-process mode too. It relies on the
    child's `_upper_bounds`, `_buckets` and `_sum`, checked against `observe` by a unit test.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for index in np.flatnonzero(counts):
        histogram._buckets[index].inc(int(counts[index]))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aeserve_requests", "HTTP requests by model, version, endpoint and status.",
            ["model", "version", "endpoint", "status"], registry=r)
        self.latency = Histogram(
            "aeserve_request_duration_seconds", "Time from request start to response end.",
            ["model", "version", "endpoint", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.rows = Counter(
            "aeserve_rows", "Rows scored, encoded or reconstructed.",
            ["model", "version", "endpoint"], registry=r)
        self.batch_rows = Histogram(
            "aeserve_batch_rows", "Rows per onnxruntime run.", ["model", "version"],
            buckets=ROW_BUCKETS, registry=r)
        self.queue_seconds = Histogram(
            "aeserve_queue_seconds", "Wait between a decoded request and the start of its run.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram(
            "aeserve_inference_seconds", "Duration of onnxruntime runs.", ["model", "version"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.anomalies = Counter(
            "aeserve_anomalies", "Rows whose score was above the threshold.",
            ["model", "version"], registry=r)
        self.scored = Counter(
            "aeserve_scored_rows", "Rows given an anomaly score (the anomaly-rate denominator).",
            ["model", "version"], registry=r)
        self.score_ratio = Histogram(
            "aeserve_score_threshold_ratio", "Score divided by the model's threshold.",
            ["model"], buckets=RATIO_BUCKETS, registry=r)
        self.load_failures = Counter(
            "aeserve_model_load_failures", "Model versions that failed validation or loading.",
            ["model", "version"], registry=r)
        self.model_info = Gauge(
            "aeserve_model_info", "1 for each ready model version, with its active providers.",
            ["model", "version", "providers"], registry=r, multiprocess_mode="max")
        self._info_series: set[tuple[str, str, str]] = set()
        # Drift windows (serving/drift.py): counts that add up across workers, and the shares
        # of the card's reference beside them; the PSI is recorded by the alert rules.
        self.drift_window = Gauge(
            "aeserve_drift_window_rows", "Rows of the version's drift window in each reference "
            "bin of a column (a feature, or the score).",
            ["model", "version", "kind", "column", "bin"], registry=r,
            multiprocess_mode="livesum")
        self.drift_reference = Gauge(
            "aeserve_drift_reference_share", "Share of the reference rows in each bin of a "
            "column, from the model card.", ["model", "version", "kind", "column", "bin"],
            registry=r, multiprocess_mode="max")
        self._drift: dict[tuple[str, str], tuple[object, list]] = {}
        # Shadow versions (serving/shadow.py): how the shadow's verdicts compare with the
        # active version's on the same rows, and the rows it could not score.
        self.shadow_rows = Counter(
            "aeserve_shadow_rows", "Rows scored by both the active version and the shadow, by "
            "outcome: both_normal, both_anomaly, new_alarm (only the shadow flags the row), "
            "lost_alarm (only the active version does).",
            ["model", "version", "shadow_version", "outcome"], registry=r)
        self.shadow_skipped_rows = Counter(
            "aeserve_shadow_skipped_rows", "Sampled rows the shadow version did not compare: "
            "too many waiting, a failed run, or a non-finite score.",
            ["model", "shadow_version"], registry=r)
        # The prediction log and feedback (serving/prediction_log.py).
        self.prediction_log_rows = Counter(
            "aeserve_prediction_log_rows", "Scored rows written to the prediction log.",
            registry=r)
        self.prediction_log_dropped_rows = Counter(
            "aeserve_prediction_log_dropped_rows", "Scored rows not logged, by reason: "
            "queue_full (too many rows waiting for the writer), write_failed, or unwritable "
            "(a record the log cannot hold, dropped alone).",
            ["reason"], registry=r)
        self.prediction_log_rotated_files = Counter(
            "aeserve_prediction_log_rotated_files", "Oldest prediction files removed to keep "
            "the log within AESERVE_PREDICTION_LOG_MAX_BYTES.", registry=r)
        self.feedback_labels = Counter(
            "aeserve_feedback_labels", "Labels joined to a logged prediction, by outcome of "
            "the label against the verdict served: true_positive, false_positive, "
            "true_negative, false_negative.",
            ["model", "version", "outcome"], registry=r)
        self.feedback_unmatched = Counter(
            "aeserve_feedback_unmatched_labels", "Labels whose id has no logged prediction "
            "(stored all the same, for aeserve evaluate --from-log).", ["model"], registry=r)
        # Streams (serving/streams.py): alarms by event, and the series kept.
        self.alarm_events = Counter(
            "aeserve_alarm_events", "Alarm starts and ends of streamed series, by event: start, "
            "end.", ["model", "event"], registry=r)
        self.stream_series = Gauge(
            "aeserve_stream_series", "Series whose state POST /models/{name}/stream keeps.",
            ["model"], registry=r, multiprocess_mode="livesum")
        self.stream_series_in_alarm = Gauge(
            "aeserve_stream_series_in_alarm", "Streamed series in alarm now.",
            ["model"], registry=r, multiprocess_mode="livesum")
        self.stream_dropped_series = Counter(
            "aeserve_stream_dropped_series", "Series whose state was dropped, by reason: "
            "evicted (beyond AESERVE_STREAM_MAX_SERIES), expired (idle), overflow (windows whose "
            "scores overflowed float32).",
            ["model", "reason"], registry=r)
        # Labelled children by (metric, labels): `labels()` validates and hashes its arguments
        # under a lock on every call, which the per-request paths should not pay.
        self._children: dict[tuple, object] = {}

    def _child(self, metric, *labels: str):
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def rows_counter(self, model: str, version: int, endpoint: str) -> Counter:
        """The `aeserve_rows` child of a model version and endpoint."""
        return self._child(self.rows, model, str(version), endpoint)

    def record_request(self, model: str, version: str, endpoint: str, status: str,
                       seconds: float) -> None:
        """Count one request and its duration."""
        self._child(self.requests, model, version, endpoint, status).inc()
        self._child(self.latency, model, version, endpoint, status).observe(seconds)

    def observe_scores(self, model: str, version: int, scores: np.ndarray, threshold: float,
                       flagged: np.ndarray) -> None:
        """Count the rows given a finite score, once each, and add them to the score histogram.

        Rows whose score overflowed are answered with a 422 (`NonFiniteResult`), not scored:
        they are left out here, so no series ever takes a non-finite value.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(scores.sum()):  # one pass; the mask only for a batch that needs it
            finite = np.isfinite(scores)
            scores, flagged = scores[finite], np.asarray(flagged)[finite]
        labels = (model, str(version))
        self._child(self.scored, *labels).inc(len(scores))
        self._child(self.anomalies, *labels).inc(int(np.count_nonzero(flagged)))
        observe_many(self._child(self.score_ratio, model), scores / max(threshold, 1e-12))

    def publish_drift(self, model: str, version: int, monitor) -> None:
        """A version's drift window, bin by bin (and, the first time, its reference)."""
        key = (model, str(version))
        known = self._drift.get(key)
        if known is None or known[0] is not monitor:
            columns = [("feature", name) for name in monitor.card.feature_names]
            columns.append(("score", "score"))
            children = [[self.drift_window.labels(*key, kind, column, str(b))
                         for b in range(monitor.feature_expected.shape[1])]
                        for kind, column in columns]
            reference = np.vstack([monitor.feature_expected, monitor.score_expected])
            for (kind, column), shares in zip(columns, reference, strict=True):
                for b, share in enumerate(shares):
                    self.drift_reference.labels(*key, kind, column, str(b)).set(float(share))
            known = self._drift[key] = (monitor, children)
        features, scores, *_ = monitor.counts()
        for row, counts in zip(known[1], np.vstack([features, scores]), strict=True):
            for child, count in zip(row, counts.tolist(), strict=True):
                child.set(count)

    def shadow_compared(self, model: str, version: int, shadow: int,
                        counts: dict[str, int]) -> None:
        for outcome, n in counts.items():
            if n:
                self._child(self.shadow_rows, model, str(version), str(shadow), outcome).inc(n)

    def shadow_skipped(self, model: str, shadow: int, rows: int) -> None:
        self._child(self.shadow_skipped_rows, model, str(shadow)).inc(rows)

    def prediction_log_written(self, rows: int) -> None:
        self.prediction_log_rows.inc(rows)

    def prediction_log_dropped(self, rows: int, reason: str) -> None:
        self._child(self.prediction_log_dropped_rows, reason).inc(rows)

    def prediction_log_rotated(self) -> None:
        self.prediction_log_rotated_files.inc()

    def feedback_counted(self, model: str, counts: dict[tuple[int, str], int]) -> None:
        """Labels joined to predictions, by (version, outcome)."""
        for (version, outcome), n in counts.items():
            self._child(self.feedback_labels, model, str(version), outcome).inc(n)

    def feedback_unmatched_labels(self, model: str, n: int) -> None:
        self._child(self.feedback_unmatched, model).inc(n)

    def shadow_counts(self, model: str, version: int, shadow: int) -> tuple[dict[str, int], int]:
        """(rows by outcome, rows skipped) for one active/shadow pair, over every worker."""
        counts: dict[str, int] = {}
        skipped = 0
        for family in self._readable().collect():
            for sample in family.samples:
                labels = sample.labels
                if (sample.name == "aeserve_shadow_rows_total" and labels["model"] == model
                        and labels["version"] == str(version)
                        and labels["shadow_version"] == str(shadow)):
                    counts[labels["outcome"]] = counts.get(labels["outcome"], 0) + int(
                        sample.value)
                elif (sample.name == "aeserve_shadow_skipped_rows_total"
                      and labels["model"] == model and labels["shadow_version"] == str(shadow)):
                    skipped += int(sample.value)
        return counts, skipped

    def _readable(self) -> CollectorRegistry:
        """The registry of this process, or one over every worker's when running several."""
        if MULTIPROCESS_ENV in os.environ:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return registry
        return self.registry

    def set_models(self, ready: list[tuple[str, int, list[str]]]) -> None:
        """1 for the currently ready versions, 0 for those that no longer are.

        Set to 0 rather than removed: in multi-process mode a removed series would live on in
        the worker's metrics file.
        """
        current = {(name, str(version), ",".join(providers))
                   for name, version, providers in ready}
        for labels in self._info_series - current:
            self.model_info.labels(*labels).set(0)
        for labels in current:
            self.model_info.labels(*labels).set(1)
        self._info_series |= current
        serving = {(name, str(version)) for name, version, _ in ready}
        for key in [k for k in self._drift if k not in serving]:  # its window is gone too
            for row in self._drift.pop(key)[1]:
                for child in row:
                    child.set(0)

    def render(self) -> bytes:
        """This process's metrics, or every worker's when running several (multi-process)."""
        return generate_latest(self._readable())
