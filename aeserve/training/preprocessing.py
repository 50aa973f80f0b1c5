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

from aeserve.training.spill import row_chunks

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


#: Rows per pass of the statistics: a float64 copy of this many rows at most, whatever the data.
CHUNK_ROWS = 16_384


def chunks(X: np.ndarray, rows: np.ndarray | None = None):
    """The rows of `X` (or its rows numbered `rows`) as float64, `CHUNK_ROWS` at a time."""
    for _, _, part in row_chunks(X, rows, CHUNK_ROWS):
        yield part.astype(np.float64)


def mean_and_std(X: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Column means and (population) standard deviations, in two passes over float64 chunks:
    exact to float64 rounding, in the memory of one chunk."""
    n = len(X) if rows is None else len(rows)
    mean = sum(chunk.sum(axis=0) for chunk in chunks(X, rows)) / n
    variance = sum(((chunk - mean) ** 2).sum(axis=0) for chunk in chunks(X, rows)) / n
    return mean, np.sqrt(variance)


def fit_scaler(X: np.ndarray, kind: ScalingKind, rows: np.ndarray | None = None) -> AffineScaler:
    """Standard (mean / std), robust (median / normal-consistent IQR) or min-max scaling, fit on
    the rows of `X` numbered `rows` (all rows when None) without copying them.

    Robust scaling keeps a few extreme training values (heavy tails, unlabelled anomalies) from
    inflating the spread that every other row is measured in; where a column's IQR is zero (a
    mostly constant feature) it falls back to the standard deviation. Its quantiles need a
    whole column: one column at a time is copied.
    """
    if kind not in ("standard", "robust", "minmax"):
        raise ValueError(f"unknown scaling {kind!r}")
    minimum = np.min([chunk.min(axis=0) for chunk in chunks(X, rows)], axis=0)
    maximum = np.max([chunk.max(axis=0) for chunk in chunks(X, rows)], axis=0)
    if kind == "standard":
        offset, spread = mean_and_std(X, rows)
    elif kind == "robust":
        # median, 75th and 25th percentiles of each column
        q50, q75, q25 = np.array([
            np.percentile((X[:, j] if rows is None else X[rows, j]).astype(np.float64),
                          [50, 75, 25]) for j in range(X.shape[1])]).T
        offset = q50
        spread = (q75 - q25) / 1.349  # the IQR of a normal distribution is 1.349 sigma
        spread = np.where(spread > 0, spread, mean_and_std(X, rows)[1])
    else:
        offset = minimum
        spread = maximum - offset
    magnitude = np.maximum(np.maximum(np.abs(minimum), np.abs(maximum)), 1.0)
    constant = spread <= _RELATIVE_TOLERANCE * magnitude
    scale = np.where(constant, np.maximum(np.abs(offset), 1.0), spread)
    return AffineScaler(kind=kind, offset=offset, scale=scale)
