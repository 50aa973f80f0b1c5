"""Networks with weights set by hand, whose outputs a test can compute on paper."""

from __future__ import annotations

import torch

from aeserve.training.model import Autoencoder, AutoencoderConfig


def two_member_identity_model() -> Autoencoder:
    """Member 0 reconstructs its (scaled) input exactly; member 1 always answers 0."""
    model = Autoencoder(AutoencoderConfig(input_dim=2, hidden_sizes=[2], activation="relu",
                                          members=2))
    with torch.no_grad():
        for layer in (model.encoder[0], model.decoder[0]):
            layer.weight.copy_(torch.stack([torch.eye(2), torch.zeros(2, 2)]))
            layer.bias.zero_()
    return model
