"""Feature scaling fit on training rows only, later folded into the ONNX graph.

Both scalers are affine, `z = (x - offset) / scale`, so the exported graph needs two constant
vectors and no training code. A feature that is constant in training gets `scale = 1`: dividing by
a zero (or tiny) spread would turn any later deviation into an astronomically large score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

ScalingKind = Literal["standard", "minmax"]

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
    """Standard (mean / std) or min-max ([0, 1] on training rows) scaling of each column."""
    X = np.asarray(X, dtype=np.float64)
    if kind == "standard":
        offset = X.mean(axis=0)
        spread = X.std(axis=0)
    elif kind == "minmax":
        offset = X.min(axis=0)
        spread = X.max(axis=0) - offset
    else:
        raise ValueError(f"unknown scaling {kind!r}")
    magnitude = np.maximum(np.abs(X).max(axis=0), 1.0)
    constant = spread <= _RELATIVE_TOLERANCE * magnitude
    scale = np.where(constant, 1.0, spread)
    return AffineScaler(kind=kind, offset=offset, scale=scale)
