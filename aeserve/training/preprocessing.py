"""Feature scaling fit on training rows only, later folded into the ONNX graph.

The scalers are affine, `z = (x - offset) / scale`, so the exported graph needs two constant
vectors and no training code. A feature that is constant in training gets `scale = max(|value|,
1)`: dividing by its zero (or tiny) spread would turn any later deviation into an astronomically
large score, and a unit scale would make the score depend on the feature's unit (a constant 1,000
that later reads 1,500 would add 250,000 to the squared error); relative to its magnitude, that
move counts as 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

ScalingKind = Literal["standard", "robust", "minmax"]

#: Spreads below this (relative to the feature's magnitude) count as a constant feature.
_RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class AffineScaler:
    kind: ScalingKind
    offset: np.ndarray
    scale: np.ndarray

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.offset) / self.scale

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        return Z * self.scale + self.offset


def fit_scaler(X: np.ndarray, kind: ScalingKind) -> AffineScaler:
    """Standard (mean / std), robust (median / normal-consistent IQR) or min-max scaling.

    Robust scaling keeps a few extreme training values (heavy tails, unlabelled anomalies) from
    inflating the spread that every other row is measured in; where a column's IQR is zero (a
    mostly constant feature) it falls back to the standard deviation.
    """
    X = np.asarray(X, dtype=np.float64)
    if kind == "standard":
        offset = X.mean(axis=0)
        spread = X.std(axis=0)
    elif kind == "robust":
        offset = np.median(X, axis=0)
        q75, q25 = np.percentile(X, [75, 25], axis=0)
        spread = (q75 - q25) / 1.349  # the IQR of a normal distribution is 1.349 sigma
        spread = np.where(spread > 0, spread, X.std(axis=0))
    elif kind == "minmax":
        offset = X.min(axis=0)
        spread = X.max(axis=0) - offset
    else:
        raise ValueError(f"unknown scaling {kind!r}")
    magnitude = np.maximum(np.abs(X).max(axis=0), 1.0)
    constant = spread <= _RELATIVE_TOLERANCE * magnitude
    scale = np.where(constant, np.maximum(np.abs(offset), 1.0), spread)
    return AffineScaler(kind=kind, offset=offset, scale=scale)
