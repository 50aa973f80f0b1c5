"""Each feature's typical reconstruction error on rows the model never trained on.

The `residual_cauchy` score (training/export.py) divides each feature's squared error by this
scale, s_j: the median over held-out normal rows of (z_hat_j - z_j)^2 in the scaled space. Held-out
rows, because errors on training rows are smaller than those the served model will see; the
median, because in unlabelled data the anomalies inflate a mean; cross-fitted members contribute
each row's error from the one member that did not train on it, as the threshold's calibration does.
"""

from __future__ import annotations

import numpy as np
import torch

from aeserve.training.model import Autoencoder
from aeserve.training.preprocessing import AffineScaler
from aeserve.training.spill import release
from aeserve.training.trainer import row_reader

#: Rows per forward pass: memory stays a few batches' worth whatever the data's size.
CHUNK_ROWS = 8192

#: No feature's scale is below this share of the features' mean scale. A feature whose median
#: error is near zero (mostly-zero pixels, dead embedding units, a constant column) would
#: otherwise turn its small, meaningless errors into the largest terms of every score: the floor
#: caps a feature's weight at ten times the average feature's (docs/variants.md, "The floor").
FLOOR_SHARE = 0.1
#: And at least this, when every feature is rebuilt exactly.
FLOOR = 1e-6


#: Rows whose errors give the medians at most: a seeded sample beyond it. The median of 200,000
#: errors is within about 0.3 % of the whole data's, and memory stays bounded.
MAX_ROWS = 200_000


def residual_scale(model: Autoencoder, Z: np.ndarray, folds: np.ndarray | None, *,
                   rows: np.ndarray | None = None, scaler: AffineScaler | None = None,
                   seed: int = 0) -> np.ndarray:
    """s_j for rows the model did not train on: the rows of `Z` (or those numbered `rows`,
    scaled by `scaler` as they are read). With `folds`, one per row, row i counts with member
    folds[i] only (cross-fit); without, with every member. Beyond `MAX_ROWS` rows, a seeded
    sample of them."""
    n = len(Z) if rows is None else len(rows)
    positions = np.arange(n)
    if n > MAX_ROWS:
        positions = np.sort(np.random.default_rng(seed).choice(n, MAX_ROWS, replace=False))
    selected = positions if rows is None else rows[positions]
    take = row_reader(Z, scaler)
    # Without folds, every member's errors of a row count: members rows of errors per row.
    per_row = model.config.members if folds is None else 1
    squared = np.empty((len(positions) * per_row, Z.shape[1]), dtype=np.float32)
    filled = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(positions), CHUNK_ROWS):
            chunk = slice(start, start + CHUNK_ROWS)
            z = take(torch.as_tensor(selected[chunk]))
            errors = (model(z)[1] - z) ** 2  # [N, d], or [K, N, d] with members
            if errors.dim() == 3 and folds is not None:
                errors = errors[torch.as_tensor(folds[positions[chunk]].astype(np.int64)),
                                torch.arange(len(z))]
            errors = errors.reshape(-1, Z.shape[1]).numpy()
            squared[filled:filled + len(errors)] = errors
            filled += len(errors)
            release(Z)
    # One column at a time in float64: a copy of one feature's errors, not of all of them.
    median = np.array([np.median(squared[:, j].astype(np.float64))
                       for j in range(Z.shape[1])])
    return floored(median)


def floored(median: np.ndarray) -> np.ndarray:
    """Per-feature median squared residuals as scales: each at least `FLOOR_SHARE` of their
    mean, plus `FLOOR` (the reasons beside the two constants)."""
    return np.maximum(median, FLOOR_SHARE * median.mean() + FLOOR)
