"""The three operations on one model version, from request bytes to response bytes.

Plain functions with no HTTP in them: the routes call them in a worker thread, so decoding a large
body and running the graph never block the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from service.codecs import decode_instances, dumps
from service.metrics import Metrics
from service.repository import ModelVersion
from service.scoring import percentiles, verdicts


def run_graph(entry: ModelVersion, rows: np.ndarray, outputs: Sequence[str],
              metrics: Metrics, enqueued_at: float) -> dict[str, np.ndarray]:
    """One onnxruntime run, with its queue time, duration and batch size recorded."""
    labels = (entry.name, str(entry.version))
    started = time.perf_counter()
    metrics.queue_seconds.labels(*labels).observe(started - enqueued_at)
    result = entry.session.run(rows, tuple(outputs))
    metrics.inference_seconds.labels(*labels).observe(time.perf_counter() - started)
    metrics.batch_rows.labels(*labels).observe(len(rows))
    return result


def score_rows(entry: ModelVersion, scores: np.ndarray, metrics: Metrics) -> dict[str, Any]:
    """Scores with their meaning: threshold, verdicts and percentiles; counted for alerting."""
    card = entry.card
    flagged = verdicts(scores, card.threshold)
    metrics.observe_scores(entry.name, entry.version, scores, card.threshold, flagged)
    return {
        "scores": scores,
        "threshold": card.threshold,
        "is_anomaly": flagged,
        "percentiles": percentiles(scores, card.score_quantiles).round(3),
    }


Operation = Callable[[ModelVersion, np.ndarray, Metrics, float], dict[str, Any]]


def _encode(entry: ModelVersion, rows: np.ndarray, metrics: Metrics, t0: float) -> dict:
    return {"embeddings": run_graph(entry, rows, ("embedding",), metrics, t0)["embedding"]}


def _reconstruct(entry: ModelVersion, rows: np.ndarray, metrics: Metrics, t0: float) -> dict:
    out = run_graph(entry, rows, ("reconstruction",), metrics, t0)
    return {"reconstructions": out["reconstruction"]}


def _anomaly_score(entry: ModelVersion, rows: np.ndarray, metrics: Metrics, t0: float) -> dict:
    scores = run_graph(entry, rows, ("score",), metrics, t0)["score"]
    return score_rows(entry, scores, metrics)


OPERATIONS: dict[str, Operation] = {
    "encode": _encode,
    "reconstruct": _reconstruct,
    "anomaly-score": _anomaly_score,
}


def run_operation(operation: str, entry: ModelVersion, body: bytes, content_type: str | None,
                  max_rows: int, metrics: Metrics, enqueued_at: float) -> tuple[bytes, int]:
    """Decode, infer and serialise; returns the response bytes and the row count.

    Raises the typed errors of `service.errors` on bad input.
    """
    rows = decode_instances(body, content_type, entry.card.feature_names, max_rows)
    payload = {"model": entry.name, "version": entry.version}
    payload.update(OPERATIONS[operation](entry, rows, metrics, enqueued_at))
    metrics.rows.labels(entry.name, str(entry.version), operation).inc(len(rows))
    return dumps(payload), len(rows)
