"""What a score means: the verdict against a threshold, and the percentile among normal scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentiles(scores: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Percentile of each score among held-out normal scores, from the card's 101 quantiles.

    Linear between adjacent stored quantiles; 0 below the smallest, 100 at or above the largest.
    Runs of equal quantiles (a flat score distribution) are skipped over rather than divided by.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    upper = np.searchsorted(q, s, side="right")  # q[upper - 1] <= s < q[upper]
    inside = (upper > 0) & (upper < len(q))
    lo = q[np.clip(upper - 1, 0, len(q) - 1)]
    hi = q[np.clip(upper, 0, len(q) - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(inside, (s - lo) / (hi - lo), 0.0)
    result = np.where(upper == 0, 0.0, np.where(upper >= len(q), 100.0, upper - 1 + fraction))
    return result * (100.0 / (len(q) - 1))


def verdicts(scores: np.ndarray, threshold: float) -> np.ndarray:
    """A row is anomalous when its score is strictly above the threshold (compared in float64,
    so a float32 score is never rounded onto the threshold)."""
    return np.asarray(scores, dtype=np.float64) > threshold


def explanations(feature_errors: np.ndarray, feature_names: Sequence[str],
                 top_k: int) -> list[dict]:
    """Per row: every feature's error and the `top_k` features with their share of the score.

    The score is the mean of the feature errors, so a feature's share of it is its error over the
    row's total error: shares of all features add up to 1.
    """
    errors = np.asarray(feature_errors, dtype=np.float64)
    totals = errors.sum(axis=1, keepdims=True)
    shares = np.divide(errors, totals, out=np.zeros_like(errors), where=totals > 0)
    k = min(top_k, errors.shape[1])
    top = np.argsort(-errors, axis=1, kind="stable")[:, :k]
    return [{"feature_errors": errors[i].astype(np.float32),
             "top_features": [{"feature": feature_names[j], "error": float(errors[i, j]),
                               "share": round(float(shares[i, j]), 4)} for j in top[i]]}
            for i in range(len(errors))]
