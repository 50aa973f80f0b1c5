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
    """A row is anomalous when its score is strictly above the threshold."""
    return np.asarray(scores) > threshold
