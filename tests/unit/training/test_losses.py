"""Loss values against numbers worked out by hand."""

import math

import pytest
import torch

from aeserve.training.losses import cross_entropy_from_logits, squared_error


def test_squared_error_sums_features_per_sample():
    reconstruction = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # (1-0)^2 + (2-0)^2 = 5 ; (0-1)^2 + (0-1)^2 = 2
    assert squared_error(reconstruction, target).tolist() == [5.0, 2.0]


def test_cross_entropy_at_half():
    # y = sigmoid(0) = 0.5 for both features: -(log 0.5 + log 0.5) = 2 ln 2
    loss = cross_entropy_from_logits(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(2 * math.log(2), rel=1e-6)


def test_cross_entropy_with_soft_target():
    # y = sigmoid(ln 3) = 0.75. Target 1: -ln 0.75 = 0.2876821.
    # Target 0.5: -(0.5 ln 0.75 + 0.5 ln 0.25) = 0.8369882.
    logits = torch.full((2, 1), math.log(3.0))
    loss = cross_entropy_from_logits(logits, torch.tensor([[1.0], [0.5]]))
    assert loss.tolist() == pytest.approx([0.2876821, 0.8369882], rel=1e-6)


def test_cross_entropy_stays_finite_when_saturated():
    loss = cross_entropy_from_logits(torch.tensor([[80.0]]), torch.tensor([[0.0]]))
    assert loss.item() == pytest.approx(80.0, rel=1e-6)  # -log(1 - sigmoid(80)) ~ 80
