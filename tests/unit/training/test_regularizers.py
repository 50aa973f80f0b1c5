"""Each penalty against a value worked out by hand on a tiny fixed example."""

import math

import numpy as np
import pytest
import torch

from aeserve.training.model import Autoencoder, AutoencoderConfig
from aeserve.training.objectives import VariantOptions, corrupt, per_sample_objective
from aeserve.training.regularizers import (
    gaussian_kl,
    gaussian_noise,
    jacobian_frobenius,
    kl_sparsity_penalty,
    l1_activation_penalty,
    masking_noise,
    sigmoid_jacobian_frobenius,
)


def kl_term(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_l1_penalty_by_hand():
    a = torch.tensor([[0.2, -0.5], [0.1, 0.0]])
    # lambda * sum_i |a_i| with lambda = 0.1: 0.1 * 0.7 = 0.07 and 0.1 * 0.1 = 0.01
    assert l1_activation_penalty(a, 0.1).tolist() == pytest.approx([0.07, 0.01])


def test_kl_sparsity_penalty_by_hand():
    a = torch.tensor([[0.1, 0.3, 0.05], [0.3, 0.1, 0.05], [0.2, 0.2, 0.05]])
    # p'_j = (0.2, 0.2, 0.05); p = 0.05:
    # unit 1 and 2: 0.05 ln(0.05/0.2) + 0.95 ln(0.95/0.8) = 0.0939430 each; unit 3: 0
    expected = 2 * (0.05 * math.log(0.25) + 0.95 * math.log(0.95 / 0.8))
    assert expected == pytest.approx(0.1878861, rel=1e-6)
    assert kl_sparsity_penalty(a, 0.05, 1.0).item() == pytest.approx(expected, rel=1e-5)
    assert kl_sparsity_penalty(a, 0.05, 3.0).item() == pytest.approx(3 * expected, rel=1e-5)


def test_kl_penalty_is_zero_at_target_and_positive_elsewhere():
    at_target = torch.full((4, 3), 0.05)
    assert kl_sparsity_penalty(at_target, 0.05, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    for value in (0.01, 0.2, 0.9):
        off = torch.full((4, 3), value)
        assert kl_sparsity_penalty(off, 0.05, 1.0).item() == pytest.approx(
            3 * kl_term(0.05, value), rel=1e-5)
        assert kl_sparsity_penalty(off, 0.05, 1.0).item() > 0


def test_kl_penalty_stays_finite_at_saturation():
    for value in (0.0, 1.0):
        penalty = kl_sparsity_penalty(torch.full((2, 2), value), 0.05, 1.0)
        assert torch.isfinite(penalty)


def test_contractive_closed_form_by_hand():
    W = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    h = torch.sigmoid(torch.zeros(1, 2))  # x = 0, b = 0: h = (0.5, 0.5), h(1-h) = 0.25
    # 0.25^2 * (1 + 4) + 0.25^2 * (0 + 1) = 0.3125 + 0.0625
    assert sigmoid_jacobian_frobenius(h, W).item() == pytest.approx(0.375)


def test_closed_form_and_autograd_agree():
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(input_dim=5, hidden_sizes=[3], variant="contractive"))
    x = torch.randn(4, 5)
    closed = sigmoid_jacobian_frobenius(model.encode(x), model.encoder[0].weight)
    autograd = jacobian_frobenius(model.encode, x)
    assert torch.allclose(closed, autograd, rtol=1e-5, atol=1e-7)


def test_autograd_jacobian_on_a_deep_encoder_matches_finite_differences():
    torch.manual_seed(1)
    model = Autoencoder(AutoencoderConfig(input_dim=3, hidden_sizes=[4, 2], activation="tanh"))
    model = model.double()
    x = torch.randn(2, 3, dtype=torch.float64)
    got = jacobian_frobenius(model.encode, x)
    step = 1e-6
    for row in range(2):
        columns = []
        for i in range(3):
            bump = torch.zeros(1, 3, dtype=torch.float64)
            bump[0, i] = step
            columns.append((model.encode(x[row:row + 1] + bump)
                            - model.encode(x[row:row + 1] - bump)) / (2 * step))
        assert got[row].item() == pytest.approx(sum((c**2).sum().item() for c in columns),
                                                rel=1e-6)


def test_gaussian_kl_by_hand():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # 1/2 [(1 + 1 - 1 - 0) + (0 + 2 - 1 - ln 2)] = 1/2 (2 - ln 2) = 0.6534264
    assert gaussian_kl(mu, logvar).item() == pytest.approx(0.6534264, rel=1e-6)
    assert gaussian_kl(torch.zeros(1, 3), torch.zeros(1, 3)).item() == 0.0


def test_noise_statistics_and_determinism():
    x = torch.ones(200, 50)
    noisy = gaussian_noise(x, 0.3, torch.Generator().manual_seed(0))
    assert (noisy - x).mean().item() == pytest.approx(0.0, abs=0.01)
    assert (noisy - x).std().item() == pytest.approx(0.3, rel=0.03)
    again = gaussian_noise(x, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    masked = masking_noise(x, 0.25, torch.Generator().manual_seed(0))
    assert (masked == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert set(masked.unique().tolist()) == {0.0, 1.0}


def test_denoising_compares_the_corrupted_reconstruction_with_the_clean_input():
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(input_dim=4, hidden_sizes=[2], variant="denoising"))
    x = torch.randn(6, 4)
    options = VariantOptions(noise="gaussian", noise_level=0.5)
    got = per_sample_objective(model, x, options, torch.Generator().manual_seed(7), True)
    noisy = corrupt(x, options, torch.Generator().manual_seed(7))
    expected = ((model.decode(model.encode(noisy)) - x) ** 2).sum(dim=1)
    assert torch.allclose(got, expected)
    clean = per_sample_objective(model, x, options, torch.Generator().manual_seed(7), False)
    assert torch.allclose(clean, ((model.decode(model.encode(x)) - x) ** 2).sum(dim=1))


def test_vae_validation_objective_is_reconstruction_at_mu_plus_beta_kl():
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(input_dim=4, hidden_sizes=[3, 2], variant="vae"))
    x = torch.randn(5, 4)
    mu, logvar = model.encode_distribution(x)
    assert torch.equal(model.encode(x), mu)
    expected = ((model.decode(mu) - x) ** 2).sum(dim=1) + 0.5 * gaussian_kl(mu, logvar)
    got = per_sample_objective(model, x, VariantOptions(vae_beta=0.5),
                               torch.Generator().manual_seed(0), training=False)
    assert torch.allclose(got, expected)
    sampled = per_sample_objective(model, x, VariantOptions(vae_beta=0.5),
                                   torch.Generator().manual_seed(0), training=True)
    assert not torch.allclose(sampled, expected)  # reparameterized sample, not mu


def test_sparse_penalties_added_to_the_reconstruction_loss():
    torch.manual_seed(0)
    x = torch.rand(4, 3)
    for variant, options, penalty in [
        ("sparse-l1", VariantOptions(l1_weight=0.3),
         lambda code: l1_activation_penalty(code, 0.3)),
        ("sparse-kl", VariantOptions(sparsity_target=0.1, sparsity_weight=2.0),
         lambda code: kl_sparsity_penalty(code, 0.1, 2.0)),
    ]:
        model = Autoencoder(AutoencoderConfig(input_dim=3, hidden_sizes=[2], variant=variant))
        code = model.encode(x)
        expected = model.reconstruction_loss(code, x) + penalty(code)
        got = per_sample_objective(model, x, options, torch.Generator(), training=True)
        assert torch.allclose(got, expected)


def test_sparse_kl_refuses_non_sigmoid_units():
    with pytest.raises(ValueError, match="needs sigmoid hidden units; got --activation relu"):
        AutoencoderConfig(input_dim=3, hidden_sizes=[2], activation="relu", variant="sparse-kl")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"sparsity_target": 1.0}, "sparsity target"), ({"noise": "salt"}, "unknown noise"),
     ({"noise": "masking", "noise_level": 1.0}, "masking fraction"),
     ({"l1_weight": -1.0}, "l1 weight"), ({"vae_score": "nll"}, "vae score")])
def test_invalid_variant_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VariantOptions(**kwargs)


def test_relevant_options_per_variant():
    options = VariantOptions()
    assert options.relevant("ae") == {}
    assert options.relevant("sparse-kl") == {"sparsity_target": 0.05, "sparsity_weight": 1.0}
    assert set(options.relevant("vae")) == {"vae_beta", "vae_score"}


def test_sparse_kl_pulls_mean_activation_towards_target():
    from aeserve.training.trainer import TrainConfig, train_autoencoder

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(400, 8))
    config = TrainConfig(epochs=60, patience=60, seed=0, progress=False, learning_rate=1e-2,
                         batch_size=64)

    def mean_activation(variant: str) -> float:
        result = train_autoencoder(Z[:320], Z[320:],
                                   AutoencoderConfig(8, [12], variant=variant), config,
                                   VariantOptions(sparsity_target=0.05, sparsity_weight=1.0))
        with torch.no_grad():
            return result.model.encode(torch.as_tensor(Z, dtype=torch.float32)).mean().item()

    plain, sparse = mean_activation("ae"), mean_activation("sparse-kl")
    assert abs(sparse - 0.05) < abs(plain - 0.05)
    assert abs(sparse - 0.05) < 0.5 * abs(plain - 0.05)
