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

#: Rows per forward pass: memory stays a few batches' worth whatever the data's size.
CHUNK_ROWS = 8192

#: A feature the model rebuilds exactly (a constant one) would get a scale of zero and make
#: every tiny error infinite: each scale is at least this share of the features' mean scale.
FLOOR_SHARE = 1e-2
#: And at least this, when every feature is rebuilt exactly.
FLOOR = 1e-6


def residual_scale(model: Autoencoder, Z: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
    """s_j for scaled rows `Z` [N, d] that the model did not train on: with `folds`, row i counts
    with member folds[i] only (cross-fit); without, with every member."""
    squared = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(Z), CHUNK_ROWS):
            z = torch.as_tensor(Z[start:start + CHUNK_ROWS], dtype=torch.float32)
            errors = (model(z)[1] - z) ** 2  # [N, d], or [K, N, d] with members
            if errors.dim() == 3 and folds is not None:
                rows = torch.arange(len(z))
                errors = errors[torch.as_tensor(folds[start:start + len(z)]), rows]
            squared.append(errors.reshape(-1, Z.shape[1]).numpy())
    median = np.median(np.concatenate(squared).astype(np.float64), axis=0)
    return np.maximum(median, FLOOR_SHARE * median.mean() + FLOOR)
