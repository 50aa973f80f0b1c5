"""Prometheus metrics, one registry per app (so tests can build several apps in one process).

Labels stay bounded: `model` and `version` are set only once a request resolved to a loaded model
(unknown names are counted under model=""), and `endpoint` is the operation, not the raw path.

Scores are recorded as a ratio to the model's threshold (`score / threshold`): the histogram's
bucket at 1.0 is the threshold of every model, so one alert rule and one dashboard panel fit all
models, however their raw scores are scaled.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class VectorHistogram(Collector):
    """A labelled histogram fed whole numpy arrays at once.

    prometheus-client's Histogram takes one value per call, which for a 4,096-row request costs
    more than the inference; here one request is one `searchsorted` and one `bincount`.
    """

    def __init__(self, name: str, documentation: str, label: str,
                 buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._series: dict[str, tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()

    def observe(self, label_value: str, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"),
                             minlength=len(self.bounds) + 1)
        with self._lock:
            buckets, total = self._series.setdefault(
                label_value, (np.zeros(len(self.bounds) + 1, dtype=np.int64), [0.0]))
            buckets += counts
            total[0] += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        with self._lock:
            for label_value, (buckets, total) in sorted(self._series.items()):
                cumulative = np.cumsum(buckets)
                edges = [*(repr(float(b)) for b in self.bounds), "+Inf"]
                family.add_metric([label_value], list(zip(edges, cumulative.tolist(),
                                                          strict=True)), total[0])
        yield family


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
        self.score_ratio = VectorHistogram(
            "aeserve_score_threshold_ratio", "Score divided by the model's threshold.",
            "model", RATIO_BUCKETS)
        r.register(self.score_ratio)
        self.load_failures = Counter(
            "aeserve_model_load_failures", "Model versions that failed validation or loading.",
            ["model", "version"], registry=r)
        self.model_info = Gauge(
            "aeserve_model_info", "1 for each ready model version, with its active providers.",
            ["model", "version", "providers"], registry=r)

    def observe_scores(self, model: str, version: int, scores: np.ndarray, threshold: float,
                       flagged: np.ndarray) -> None:
        labels = (model, str(version))
        self.scored.labels(*labels).inc(len(scores))
        self.anomalies.labels(*labels).inc(int(np.count_nonzero(flagged)))
        self.score_ratio.observe(model, np.asarray(scores, dtype=np.float64)
                                 / max(threshold, 1e-12))

    def set_models(self, ready: list[tuple[str, int, list[str]]]) -> None:
        """Replace the model_info series with the currently ready versions."""
        self.model_info.clear()
        for name, version, providers in ready:
            self.model_info.labels(name, str(version), ",".join(providers)).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
