"""The autoencoder's forward pass against the formulas, by hand, and determinism."""

import math

import numpy as np
import pytest
import torch

from aeserve.training.defaults import default_hidden_sizes
from aeserve.training.model import Autoencoder, AutoencoderConfig
from aeserve.training.trainer import TrainConfig, train_autoencoder


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def fixed_model(**overrides) -> Autoencoder:
    config = AutoencoderConfig(input_dim=2, hidden_sizes=[1], **overrides)
    model = Autoencoder(config)
    with torch.no_grad():
        model.encoder[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
        model.encoder[0].bias.copy_(torch.tensor([0.5]))
        if model.decoder is not None:
            model.decoder[0].weight.copy_(torch.tensor([[2.0], [0.0]]))
            model.decoder[0].bias.copy_(torch.tensor([1.0, -1.0]))
        else:
            model.decoder_biases[0].copy_(torch.tensor([1.0, -1.0]))
    return model


def test_encoder_and_linear_decoder():
    model = fixed_model()
    h, y = model(torch.tensor([[2.0, 1.0]]))
    expected_h = sigmoid(2.0 - 1.0 + 0.5)  # s_f(W x + b_h) = sigmoid(1.5) = 0.8175745
    assert h.item() == pytest.approx(expected_h, rel=1e-6)
    assert y[0].tolist() == pytest.approx([2 * expected_h + 1.0, -1.0], rel=1e-6)


def test_sigmoid_decoder_and_cross_entropy():
    model = fixed_model(decoder_activation="sigmoid")
    x = torch.tensor([[1.0, 0.0]])
    h = sigmoid(1.0 + 0.5)
    y = [sigmoid(2 * h + 1.0), sigmoid(-1.0)]
    _, out = model(x)
    assert out[0].tolist() == pytest.approx(y, rel=1e-6)
    expected_loss = -(math.log(y[0]) + math.log(1 - y[1]))
    assert model.reconstruction_loss(model.encode(x), x).item() == pytest.approx(expected_loss,
                                                                                 rel=1e-6)


def test_linear_decoder_loss_is_squared_error():
    model = fixed_model()
    x = torch.tensor([[2.0, 1.0]])
    h = sigmoid(1.5)
    expected = (2 * h + 1.0 - 2.0) ** 2 + (-1.0 - 1.0) ** 2
    assert model.reconstruction_loss(model.encode(x), x).item() == pytest.approx(expected,
                                                                                 rel=1e-6)


def test_tied_weights_use_the_transpose():
    model = fixed_model(tied_weights=True)
    h = sigmoid(1.5)
    _, y = model(torch.tensor([[2.0, 1.0]]))
    # W' = W^T = [[1], [-1]], b_y = [1, -1]
    assert y[0].tolist() == pytest.approx([h + 1.0, -h - 1.0], rel=1e-6)
    assert model.decoder is None
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 2 + 1 + 2  # W, b_h, b_y: no separate decoder matrix


def test_deep_stack_shapes_and_activations():
    model = Autoencoder(AutoencoderConfig(input_dim=5, hidden_sizes=[4, 3, 2], activation="tanh"))
    h, y = model(torch.randn(7, 5))
    assert h.shape == (7, 2) and y.shape == (7, 5)
    assert torch.all(h.abs() < 1)
    assert [layer.out_features for layer in model.decoder] == [3, 4, 5]


@pytest.mark.parametrize("bad", [[], [0], [3, -1]])
def test_invalid_hidden_sizes_refused(bad):
    with pytest.raises(ValueError, match="hidden sizes"):
        AutoencoderConfig(input_dim=3, hidden_sizes=bad)


def test_defaults_are_the_benchmark_choice():
    from aeserve.training.defaults import default_activation

    assert default_hidden_sizes(30) == [64, 32, 8] == default_hidden_sizes(9, "vae")
    assert default_hidden_sizes(6) == [64, 32, 8] == default_hidden_sizes(1)
    assert default_activation("ae") == "relu" and default_activation("sparse-kl") == "sigmoid"


def test_same_seed_same_weights_different_seed_different_weights():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(120, 4))
    config = AutoencoderConfig(input_dim=4, hidden_sizes=[2])

    def weights(seed: int) -> list[np.ndarray]:
        result = train_autoencoder(Z[:100], Z[100:], config,
                                   TrainConfig(epochs=5, seed=seed, progress=False))
        return [p.detach().numpy().copy() for p in result.model.parameters()]

    first, again, other = weights(3), weights(3), weights(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_training_reduces_loss_and_early_stopping_keeps_best_epoch():
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(300, 1))
    Z = np.hstack([latent, 2 * latent, -latent]) + 0.01 * rng.normal(size=(300, 3))
    result = train_autoencoder(Z[:240], Z[240:], AutoencoderConfig(3, [1]),
                               TrainConfig(epochs=400, patience=5, seed=0, progress=False,
                                           learning_rate=1e-2, batch_size=32))
    assert result.val_losses[result.best_epoch - 1] == min(result.val_losses)
    assert min(result.val_losses) < 0.2 * result.val_losses[0]
    if result.epochs_run < 400:  # stopped early: exactly `patience` epochs without improvement
        assert result.epochs_run - result.best_epoch >= 5
