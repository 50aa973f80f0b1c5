"""The training objective of each variant: reconstruction loss plus its regularizer.

One function, `per_sample_objective`, so that the trainer stays variant-agnostic. `training=False`
gives the objective used for validation and early stopping: no corruption, no sampling, so that two
evaluations of the same weights agree. docs/variants.md writes each objective out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from aeserve.training import defaults
from aeserve.training.model import Autoencoder
from aeserve.training.regularizers import (
    gaussian_kl,
    gaussian_noise,
    jacobian_frobenius,
    kl_sparsity_penalty,
    l1_activation_penalty,
    masking_noise,
    sigmoid_jacobian_frobenius,
)

NoiseKind = Literal["gaussian", "masking"]
VaeScore = Literal["reconstruction", "elbo"]


@dataclass(frozen=True)
class VariantOptions:
    """Hyperparameters of the regularized variants; each is read only by its own variant.

    Every default, and why, is in training/defaults.py.
    """

    l1_weight: float = defaults.L1_WEIGHT
    sparsity_target: float = defaults.SPARSITY_TARGET
    sparsity_weight: float = defaults.SPARSITY_WEIGHT
    noise: NoiseKind = defaults.NOISE
    noise_level: float = defaults.NOISE_LEVEL
    contraction_weight: float = defaults.CONTRACTION_WEIGHT
    vae_beta: float = defaults.VAE_BETA
    vae_score: VaeScore = defaults.VAE_SCORE

    def __post_init__(self) -> None:
        if not 0.0 < self.sparsity_target < 1.0:
            raise ValueError(f"sparsity target must lie in (0, 1), got {self.sparsity_target}")
        if self.noise not in ("gaussian", "masking"):
            raise ValueError(f"unknown noise {self.noise!r}: gaussian or masking")
        if self.noise == "masking" and not 0.0 <= self.noise_level < 1.0:
            raise ValueError(f"masking fraction must lie in [0, 1), got {self.noise_level}")
        if self.noise_level < 0:
            raise ValueError("noise level must be non-negative")
        for name in ("l1_weight", "sparsity_weight", "contraction_weight", "vae_beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', ' ')} must be non-negative")
        if self.vae_score not in ("reconstruction", "elbo"):
            raise ValueError(f"unknown vae score {self.vae_score!r}: reconstruction or elbo")

    def relevant(self, variant: str) -> dict[str, float | str]:
        """The options that shape `variant`, for the model card."""
        names = {
            "sparse-l1": ("l1_weight",),
            "sparse-kl": ("sparsity_target", "sparsity_weight"),
            "denoising": ("noise", "noise_level"),
            "contractive": ("contraction_weight",),
            "vae": ("vae_beta", "vae_score"),
        }.get(variant, ())
        return {name: getattr(self, name) for name in names}


def contraction(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """||J_f(x)||_F^2 per sample: closed form for one sigmoid layer, autograd otherwise."""
    if len(model.encoder) == 1 and model.config.activation == "sigmoid":
        return sigmoid_jacobian_frobenius(model.encode(x), model.encoder[0].weight)
    return jacobian_frobenius(model.encode, x)


def corrupt(x: torch.Tensor, options: VariantOptions, generator: torch.Generator) -> torch.Tensor:
    if options.noise == "masking":
        return masking_noise(x, options.noise_level, generator)
    return gaussian_noise(x, options.noise_level, generator)


def per_sample_objective(model: Autoencoder, x: torch.Tensor, options: VariantOptions,
                         generator: torch.Generator, training: bool) -> torch.Tensor:
    """The loss of each row of `x` under the model's variant; the trainer averages it."""
    variant = model.config.variant
    if variant == "vae":
        mu, logvar = model.encode_distribution(x)
        z = mu
        if training:  # reparameterization: z = mu + sigma * eps, eps ~ N(0, I)
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps
        return model.reconstruction_loss(z, x) + options.vae_beta * gaussian_kl(mu, logvar)
    if variant == "denoising":
        noisy = corrupt(x, options, generator) if training else x
        return model.reconstruction_loss(model.encode(noisy), x)  # compared with the clean x
    code = model.encode(x)
    loss = model.reconstruction_loss(code, x)
    if variant == "sparse-l1":
        return loss + l1_activation_penalty(code, options.l1_weight)
    if variant == "sparse-kl":
        return loss + kl_sparsity_penalty(code, options.sparsity_target, options.sparsity_weight)
    if variant == "contractive":
        return loss + options.contraction_weight * contraction(model, x)
    return loss
