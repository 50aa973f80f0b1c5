"""Turn scores into a threshold and a percentile table.

The scores come from the exported ONNX graph, so the threshold is calibrated on exactly the numbers
the service will produce. Rules:

- `quantile:Q` (default 0.99): the Q-quantile of the scores of held-out normal rows;
- `contamination:C`: for unlabelled data with a known anomaly share C, the (1 - C)-quantile of
  the scores of every fitting row (training and held-out), so that a share C of them is flagged;
- `sigma:K`: mean + K standard deviations of the held-out normal scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aeserve.artifact.card import SCORE_QUANTILE_COUNT

RULES = ("quantile", "contamination", "sigma")


@dataclass(frozen=True)
class ThresholdRule:
    kind: str
    value: float

    def __str__(self) -> str:
        """`kind:value`, the value as short as `:g` writes it unless that would round it."""
        short = f"{self.value:g}"
        return f"{self.kind}:{short if float(short) == self.value else repr(self.value)}"


def parse_threshold_rule(rule: str) -> ThresholdRule:
    """`quantile:Q` (0 < Q < 1), `contamination:C` (0 < C < 0.5) or `sigma:K` (K > 0)."""
    kind, _, value = rule.partition(":")
    if kind not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}: use quantile:Q, contamination:C or "
                         "sigma:K, e.g. quantile:0.99")
    try:
        number = float(value)
    except ValueError as exc:
        raise ValueError(f"threshold rule {rule!r}: {value!r} is not a number") from exc
    valid = {"quantile": 0.0 < number < 1.0, "contamination": 0.0 < number < 0.5,
             "sigma": 0.0 < number < 1e6}[kind]
    if not valid:
        bounds = {"quantile": "strictly in (0, 1)", "contamination": "in (0, 0.5)",
                  "sigma": "positive"}[kind]
        raise ValueError(f"threshold rule {rule!r}: the value must be {bounds}")
    return ThresholdRule(kind, number)


def threshold_from_rule(normal_scores: np.ndarray, rule: str | ThresholdRule,
                        fit_scores: np.ndarray | None = None) -> float:
    """The score above which a row is called anomalous.

    `normal_scores`: held-out normal rows; `fit_scores`: every row the model was fit on (needed by
    `contamination`, which counts on anomalies being among them).
    """
    parsed = rule if isinstance(rule, ThresholdRule) else parse_threshold_rule(rule)
    normal = np.asarray(normal_scores, dtype=np.float64)
    if parsed.kind == "quantile":
        return float(np.quantile(normal, parsed.value))
    if parsed.kind == "sigma":
        return float(normal.mean() + parsed.value * normal.std())
    pool = normal if fit_scores is None else np.asarray(fit_scores, dtype=np.float64)
    return float(np.quantile(pool, 1.0 - parsed.value))


def score_quantiles(normal_scores: np.ndarray) -> list[float]:
    """Scores at the 0th, 1st, ..., 100th percentile: the table `percentiles` interpolates."""
    levels = np.linspace(0.0, 1.0, SCORE_QUANTILE_COUNT)
    return [float(v) for v in np.quantile(np.asarray(normal_scores, dtype=np.float64), levels)]
