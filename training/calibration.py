"""Turn scores of held-out normal rows into a threshold and a percentile table.

The scores come from the exported ONNX graph, so the threshold is calibrated on exactly the numbers
the service will produce.
"""

from __future__ import annotations

import numpy as np

from service.card import SCORE_QUANTILE_COUNT


def parse_threshold_rule(rule: str) -> float:
    """Parse `quantile:Q` with 0 < Q < 1 and return Q."""
    kind, _, value = rule.partition(":")
    if kind != "quantile":
        raise ValueError(f"unknown threshold rule {rule!r}: use quantile:Q, e.g. quantile:0.99")
    try:
        q = float(value)
    except ValueError as exc:
        raise ValueError(f"threshold rule {rule!r}: {value!r} is not a number") from exc
    if not 0.0 < q < 1.0:
        raise ValueError(f"threshold rule {rule!r}: the quantile must lie strictly in (0, 1)")
    return q


def threshold_from_rule(normal_scores: np.ndarray, rule: str) -> float:
    """The score above which a row is called anomalous."""
    q = parse_threshold_rule(rule)
    return float(np.quantile(np.asarray(normal_scores, dtype=np.float64), q))


def score_quantiles(normal_scores: np.ndarray) -> list[float]:
    """Scores at the 0th, 1st, ..., 100th percentile: the table `percentiles` interpolates."""
    levels = np.linspace(0.0, 1.0, SCORE_QUANTILE_COUNT)
    return [float(v) for v in np.quantile(np.asarray(normal_scores, dtype=np.float64), levels)]
