"""The three operations on one model version, from request bytes to response bytes.

Plain functions with no HTTP in them: the routes call them in a worker thread, so decoding a large
body and running the graph never block the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from service.codecs import decode_instances, dumps
from service.repository import ModelVersion
from service.scoring import percentiles, verdicts


def _encode(entry: ModelVersion, rows: np.ndarray) -> dict[str, Any]:
    return {"embeddings": entry.session.run(rows, ("embedding",))["embedding"]}


def _reconstruct(entry: ModelVersion, rows: np.ndarray) -> dict[str, Any]:
    return {"reconstructions": entry.session.run(rows, ("reconstruction",))["reconstruction"]}


def _anomaly_score(entry: ModelVersion, rows: np.ndarray) -> dict[str, Any]:
    scores = entry.session.run(rows, ("score",))["score"]
    card = entry.card
    return {
        "scores": scores,
        "threshold": card.threshold,
        "is_anomaly": verdicts(scores, card.threshold),
        "percentiles": percentiles(scores, card.score_quantiles).round(3),
    }


OPERATIONS: dict[str, Callable[[ModelVersion, np.ndarray], dict[str, Any]]] = {
    "encode": _encode,
    "reconstruct": _reconstruct,
    "anomaly-score": _anomaly_score,
}


def run_operation(operation: str, entry: ModelVersion, body: bytes, content_type: str | None,
                  max_rows: int) -> bytes:
    """Decode, infer and serialise; raises the typed errors of `service.errors` on bad input."""
    rows = decode_instances(body, content_type, entry.card.feature_names, max_rows)
    payload = {"model": entry.name, "version": entry.version}
    payload.update(OPERATIONS[operation](entry, rows))
    return dumps(payload)
