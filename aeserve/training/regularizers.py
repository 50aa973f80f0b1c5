"""Regularizers and input corruption of the autoencoder family, each a small pure function.

Every penalty returns per-sample values (shape [B]) except the KL sparsity penalty, which is a
property of the batch (it compares mean activations) and returns a scalar. Symbols follow
docs/variants.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: Mean activations are kept inside [EPS, 1 - EPS] so that log(p / p'_j) stays finite.
KL_EPS = 1e-6


def l1_activation_penalty(activations: torch.Tensor, weight: float) -> torch.Tensor:
    """lambda * sum_i |a_i| over the hidden units of each sample."""
    return weight * activations.abs().sum(dim=-1)


def kl_sparsity_penalty(activations: torch.Tensor, target: float, weight: float) -> torch.Tensor:
    """beta * sum_j [p log(p / p'_j) + (1 - p) log((1 - p) / (1 - p'_j))].

    p'_j is the mean activation of hidden unit j over the batch; it must lie in (0, 1), which is
    why this penalty needs sigmoid hidden units. It is clamped away from 0 and 1 numerically.
    """
    p = torch.as_tensor(target, dtype=activations.dtype)
    p_hat = activations.mean(dim=0).clamp(KL_EPS, 1.0 - KL_EPS)
    kl = p * torch.log(p / p_hat) + (1 - p) * torch.log((1 - p) / (1 - p_hat))
    return weight * kl.sum()


def sigmoid_jacobian_frobenius(h: torch.Tensor, weight_matrix: torch.Tensor) -> torch.Tensor:
    """||J_f(x)||_F^2 for one sigmoid layer h = sigmoid(W x + b), in closed form.

    dh_j/dx_i = h_j (1 - h_j) W_ji, so ||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2.
    """
    return ((h * (1 - h)) ** 2 * (weight_matrix**2).sum(dim=1)).sum(dim=1)


def jacobian_frobenius(encode: Callable[[torch.Tensor], torch.Tensor],
                       x: torch.Tensor) -> torch.Tensor:
    """||J_f(x)||_F^2 per sample by automatic differentiation, for any encoder."""
    def single(row: torch.Tensor) -> torch.Tensor:
        return encode(row.unsqueeze(0)).squeeze(0)

    jacobians = torch.func.vmap(torch.func.jacrev(single))(x)  # [B, k, d]
    return (jacobians**2).sum(dim=(1, 2))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)."""
    return 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=1)


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """x + e, e ~ N(0, sigma^2 I): additive isotropic Gaussian corruption."""
    return x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def masking_noise(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Each input set to 0 with probability `fraction` (0 is the training mean after scaling)."""
    keep = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= fraction
    return x * keep
