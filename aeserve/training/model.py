"""The autoencoder, in one readable module.

Classic formulation (Bengio et al., "Representation Learning: A Review and New Perspectives", 2013,
section 7.2; Vincent et al., "Stacked Denoising Autoencoders", JMLR 2010):

    encoder   h = s_f(W x + b_h)          s_f: sigmoid (default), relu or tanh
    decoder   y = s_g(W' h + b_y)         s_g: identity, or sigmoid for inputs in [0, 1]

A deep stack applies the encoder layer by layer (`hidden_sizes`, outermost first) and mirrors it in
the decoder; every decoder layer but the last uses s_f, the last uses s_g. With tied weights each
decoder layer reuses its encoder twin's matrix transposed (W' = W^T) and keeps its own bias.

The variational autoencoder (Kingma and Welling, "Auto-Encoding Variational Bayes", 2014) shares
the same network: its innermost encoder layer is linear and gives the mean `mu` of the Gaussian
code, and a parallel linear head gives `log sigma^2`. `encode` returns `mu`, so the exported graph
is deterministic. The other variants differ only in their training objective
(`training/objectives.py`).

Members: with `members = K > 1` the module holds K independent autoencoders of the same shape,
side by side: every layer is one batched matrix product over a leading member axis ([K, N, d]),
so K members train in about the time of one and a half (small networks spend their time in
per-operation overhead, not arithmetic). Their scores are averaged at export. Autoencoders trained
from different initialisations disagree most where there is least data, which is where anomalies
lie; averaging them removes that noise from the score.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aeserve.training.losses import cross_entropy_from_logits, squared_error

Activation = Literal["sigmoid", "relu", "tanh"]
DecoderActivation = Literal["identity", "sigmoid"]
Variant = Literal["ae", "sparse-l1", "sparse-kl", "denoising", "contractive", "vae"]
VARIANTS: tuple[str, ...] = ("ae", "sparse-l1", "sparse-kl", "denoising", "contractive", "vae")

_ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


@dataclass(frozen=True)
class AutoencoderConfig:
    """The network's shape. The defaults are the classic single layer's; training fills every
    field from its plan (training/plan.py, training/defaults.py)."""

    input_dim: int
    hidden_sizes: Sequence[int] = (8,)  # stored as a tuple
    activation: Activation = "sigmoid"
    decoder_activation: DecoderActivation = "identity"
    tied_weights: bool = False
    variant: Variant = "ae"
    members: int = 1

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        if self.members < 1:
            raise ValueError(f"members must be at least 1, got {self.members}")
        if self.members > 1 and (self.variant not in MEMBER_VARIANTS or self.tied_weights):
            raise ValueError(
                f"several members are supported for the {', '.join(MEMBER_VARIANTS)} variants "
                f"without tied weights; use --members 1 for {self.variant}"
                + (" with tied weights" if self.tied_weights else ""))
        if self.variant == "sparse-kl" and self.activation != "sigmoid":
            raise ValueError(
                f"sparse-kl compares mean activations with a target in (0, 1), so it needs "
                f"sigmoid hidden units; got --activation {self.activation}")
        if self.input_dim < 1:
            raise ValueError("input_dim must be at least 1")
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden sizes must be positive integers, got {self.hidden_sizes}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}")
        if self.decoder_activation not in ("identity", "sigmoid"):
            raise ValueError(f"unknown decoder activation {self.decoder_activation!r}")
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))  # frozen all through

    @property
    def embedding_dim(self) -> int:
        """Width of the exported embedding: the members' codes side by side."""
        return self.hidden_sizes[-1] * self.members


#: Variants whose objective is a per-row function of the row alone, so that it holds unchanged
#: with a leading member axis. KL sparsity (a batch statistic), the contractive Jacobian and the
#: VAE's heads are defined for a single network here.
MEMBER_VARIANTS: tuple[str, ...] = ("ae", "sparse-l1", "denoising")


class MemberLinear(nn.Module):
    """K independent linear layers applied at once: [K, N, n_in] -> [K, N, n_out].

    A 2-D input [N, n_in] is shared by every member. Each member is initialised as `nn.Linear`
    initialises itself, from its own draws.
    """

    def __init__(self, n_in: int, n_out: int, members: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, n_out, n_in))
        self.bias = nn.Parameter(torch.empty(members, n_out))
        bound = 1.0 / math.sqrt(n_in)
        with torch.no_grad():
            for k in range(members):
                nn.init.kaiming_uniform_(self.weight[k], a=math.sqrt(5))
                nn.init.uniform_(self.bias[k], -bound, bound)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 2:  # one input for every member: a broadcast product, no copies
            return torch.matmul(h, self.weight.transpose(1, 2)) + self.bias.unsqueeze(1)
        return torch.baddbmm(self.bias.unsqueeze(1), h, self.weight.transpose(1, 2))


class Autoencoder(nn.Module):
    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.input_dim, *config.hidden_sizes]

        def linear(n_in: int, n_out: int) -> nn.Module:
            if config.members == 1:
                return nn.Linear(n_in, n_out)
            return MemberLinear(n_in, n_out, config.members)

        self.encoder = nn.ModuleList(
            linear(n_in, n_out) for n_in, n_out in itertools.pairwise(widths)
        )
        # Decoder layers run innermost first: hidden_sizes[-1] -> ... -> input_dim.
        reversed_pairs = list(zip(widths[:0:-1], widths[-2::-1], strict=True))
        if config.tied_weights:
            self.decoder = None
            self.decoder_biases = nn.ParameterList(
                nn.Parameter(torch.zeros(n_out)) for _, n_out in reversed_pairs
            )
        else:
            self.decoder = nn.ModuleList(linear(n_in, n_out) for n_in, n_out in reversed_pairs)
            self.decoder_biases = None
        self._s_f = _ACTIVATIONS[config.activation]
        self.logvar_head = (linear(widths[-2], widths[-1]) if config.variant == "vae"
                            else None)

    @property
    def activation(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """s_f, the units' activation (every layer but the decoder's last)."""
        return self._s_f

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Every encoder layer but the innermost."""
        h = x
        for layer in self.encoder[:-1]:
            h = self._s_f(layer(h))
        return h

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """h = s_f(W x + b_h), layer by layer; for the VAE, the mean mu of the code."""
        h = self.encoder[-1](self._trunk(x))
        return h if self.logvar_head is not None else self._s_f(h)

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE only: (mu, log sigma^2) of the Gaussian code q(z | x)."""
        if self.logvar_head is None:
            raise TypeError("encode_distribution is defined for the vae variant only")
        h = self._trunk(x)
        return self.encoder[-1](h), self.logvar_head(h)

    def decode_logits(self, h: torch.Tensor) -> torch.Tensor:
        """The decoder up to its last pre-activation W' h + b_y (s_g not yet applied)."""
        n_layers = len(self.config.hidden_sizes)
        for i in range(n_layers):
            if self.decoder is not None:
                h = self.decoder[i](h)
            else:
                twin = self.encoder[n_layers - 1 - i]
                h = F.linear(h, twin.weight.t(), self.decoder_biases[i])
            if i < n_layers - 1:
                h = self._s_f(h)
        return h

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """y = s_g(W' h + b_y)."""
        logits = self.decode_logits(h)
        return torch.sigmoid(logits) if self.config.decoder_activation == "sigmoid" else logits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        return h, self.decode(h)

    def reconstruction_loss(self, code: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss of decoding `code` against `target`: squared error for the identity
        decoder, cross-entropy for the sigmoid decoder."""
        logits = self.decode_logits(code)
        if self.config.decoder_activation == "sigmoid":
            # Rows outside the training range (validation data) are clamped into the loss's domain.
            return cross_entropy_from_logits(logits, target.clamp(0.0, 1.0))
        return squared_error(logits, target)
