"""Reconstruction losses, each a small pure function returning one value per sample.

Per-sample values (not a batch mean) let the trainer weight or trim rows later; the trainer
averages them over the batch. Sums run over the features of one sample, as in the classic
formulation of the autoencoder objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def squared_error(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L(x, y) = sum_k (x_k - y_k)^2: the loss for a linear (identity) decoder."""
    return ((reconstruction - target) ** 2).sum(dim=-1)


def cross_entropy_from_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L(x, y) = -sum_k [x_k log y_k + (1 - x_k) log(1 - y_k)] with y = sigmoid(logits).

    The loss for a sigmoid decoder on inputs in [0, 1]. Taking the logits (the decoder's
    pre-activation) instead of y uses the log-sum-exp form, which stays finite where y
    saturates at 0 or 1.
    """
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(dim=-1)
