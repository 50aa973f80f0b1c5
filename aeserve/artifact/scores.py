"""What a score means: the verdict against a threshold, the percentile among normal scores, and
the p-value, which keeps ranking scores beyond the largest normal one."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=256)
def _table(quantiles: tuple[float, ...]) -> tuple[np.ndarray, float]:
    """A card's quantiles as an array, and their tail's scale: made once per card, not once
    per request (converting 101 floats took two thirds of a one-row request's annotation)."""
    q = np.asarray(quantiles, dtype=np.float64)
    q.setflags(write=False)
    return q, _fit_tail(q)


def _quantiles(quantiles: Sequence[float] | np.ndarray) -> tuple[np.ndarray, float]:
    return _table(quantiles if isinstance(quantiles, tuple) else tuple(quantiles))


def percentiles(scores: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Percentile of each score among held-out normal scores, from the card's 101 quantiles.

    Linear between adjacent stored quantiles; 0 below the smallest, 100 at or above the largest.
    Runs of equal quantiles (a flat score distribution) are skipped over rather than divided by.
    """
    q, _ = _quantiles(quantiles)
    s = np.asarray(scores, dtype=np.float64)
    upper = np.searchsorted(q, s, side="right")  # q[upper - 1] <= s < q[upper]
    inside = (upper > 0) & (upper < len(q))
    lo = q[np.clip(upper - 1, 0, len(q) - 1)]
    hi = q[np.clip(upper, 0, len(q) - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(inside, (s - lo) / (hi - lo), 0.0)
    result = np.where(upper == 0, 0.0, np.where(upper >= len(q), 100.0, upper - 1 + fraction))
    return result * (100.0 / (len(q) - 1))


#: Beyond this percentile of the held-out normal scores, the tail is modelled, not read off the
#: stored quantiles: they stop at the largest held-out score, so percentiles saturate at 100 and
#: every strong anomaly would read the same. The 99th is the default threshold's quantile, so
#: with the default rule a row is flagged exactly when its p-value is below 0.01.
TAIL_START = 99
_TAIL_SHARE = 1.0 - TAIL_START / 100.0
#: The tail's scale is fitted on the percentiles from here to TAIL_START.
_FIT_FROM = 95


def tail_scale(quantiles: Sequence[float]) -> float:
    """Scale beta of an exponential tail fitted to the 95th-99th percentiles: for a tail
    P(S > s) = 0.05 exp(-(s - q95) / beta), the percentile at 1 - p lies at q95 + beta ln(0.05 / p);
    least squares over p = 0.04 ... 0.01. (The 100th, the largest held-out score, is left out:
    one row.) Floored at a millionth of the scores' scale, so that a flat tail stays defined."""
    return _quantiles(quantiles)[1]


def _fit_tail(q: np.ndarray) -> float:
    share = 1.0 - _FIT_FROM / 100.0
    levels = np.log(share / (1.0 - np.arange(_FIT_FROM + 1, TAIL_START + 1) / 100.0))
    excess = q[_FIT_FROM + 1:TAIL_START + 1] - q[_FIT_FROM]
    beta = float(levels @ excess / (levels @ levels))
    return max(beta, 1e-6 * max(abs(q[TAIL_START]), abs(q[-1]), 1e-12))


def p_values(scores: np.ndarray, quantiles: Sequence[float],
             percentile: np.ndarray | None = None) -> np.ndarray:
    """Each score's p-value: the share of normal rows expected to score at least as high.

    Up to the 99th percentile it is 1 - percentile / 100, from the stored quantiles; beyond, the
    exponential tail of `tail_scale` from there, 0.01 exp(-(s - q99) / beta), which keeps falling
    past the largest held-out score, so anomalies stay ranked where every percentile reads 100.
    Continuous at the 99th percentile; it reaches 0 only where float64 does (a score some 700
    tail scales beyond it).
    """
    q, beta = _quantiles(quantiles)
    s = np.asarray(scores, dtype=np.float64)
    start = q[TAIL_START]
    if percentile is None:
        percentile = percentiles(s, quantiles)
    below = 1.0 - percentile / 100.0
    with np.errstate(over="ignore", under="ignore"):
        above = _TAIL_SHARE * np.exp(-(s - start) / beta)
    return np.where(s > start, above, below)


def score_at_quantile(quantiles: Sequence[float], level: float) -> float:
    """The score that a share `level` (0 < level < 1) of normal rows stays below: the inverse of
    `percentiles` up to the 99th percentile, of `p_values` beyond (the exponential tail), so that
    a threshold set to `quantile:Q` from a card flags normal rows at the rate 1 - Q that the
    card's own percentiles and p-values say."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"a quantile level must be strictly between 0 and 1, got {level}")
    q, beta = _quantiles(quantiles)
    position = level * (len(q) - 1)
    if position > TAIL_START:
        return float(q[TAIL_START] + beta * np.log(_TAIL_SHARE / (1.0 - level)))
    low = int(np.floor(position))
    high = min(low + 1, len(q) - 1)
    return float(q[low] + (position - low) * (q[high] - q[low]))


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
