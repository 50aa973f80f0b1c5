"""The residual_cauchy score: log(1 + e_j / s_j) per feature, s_j from held-out rows."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from aeserve.training.export import ScoringGraph, write_onnx
from aeserve.training.model import Autoencoder, AutoencoderConfig
from aeserve.training.preprocessing import AffineScaler
from aeserve.training.residual_scale import FLOOR, FLOOR_SHARE, floored, residual_scale
from tests.unit.training.handmade import two_member_identity_model

IDENTITY_SCALER = AffineScaler("standard", np.zeros(2), np.ones(2))


def test_the_score_is_the_mean_cauchy_term_of_the_members_mean_error():
    graph = ScoringGraph(two_member_identity_model(), IDENTITY_SCALER, "residual_cauchy",
                         residual_scale=np.array([1.0, 4.0]))
    _, _, score, terms = graph(torch.tensor([[3.0, 2.0]]))
    # Member 0 errs by 0, member 1 by z^2 = (9, 4): mean squared errors (4.5, 2) over scales
    # (1, 4) give the terms log(5.5) and log(1.5), averaged over the two features.
    expected_terms = torch.tensor([[math.log(5.5), math.log(1.5)]])
    torch.testing.assert_close(terms, expected_terms)
    torch.testing.assert_close(score, expected_terms.mean(dim=1))
    member = graph.member_scores(torch.tensor([[3.0, 2.0]]))
    torch.testing.assert_close(member, torch.tensor([[0.0], [(math.log(10) + math.log(2)) / 2]]))


def test_one_huge_error_weighs_less_than_moderate_errors_everywhere():
    """Why the score is not the squared error: a row that misses every feature by 3 typical
    errors outranks one that misses a single feature by 10, under Cauchy but not under MSE."""
    scale = np.ones(4)
    model = Autoencoder(AutoencoderConfig(input_dim=4, hidden_sizes=[4], activation="relu"))
    with torch.no_grad():  # always answers 0: the error is the input itself
        for layer in (model.encoder[0], model.decoder[0]):
            layer.weight.zero_()
            layer.bias.zero_()
    scaler = AffineScaler("standard", np.zeros(4), np.ones(4))
    rows = torch.tensor([[10.0, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0]])
    cauchy = ScoringGraph(model, scaler, "residual_cauchy", residual_scale=scale)(rows)[2]
    mse = ScoringGraph(model, scaler)(rows)[2]
    assert mse[0] > mse[1] and cauchy[1] > cauchy[0]
    torch.testing.assert_close(cauchy, torch.tensor([math.log(101) / 4, math.log(10)]))


def test_the_scale_is_the_held_out_members_median_squared_error():
    model = two_member_identity_model()
    Z = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    # Rows 0 and 2 are held out from member 1 (errors z^2), row 1 from member 0 (error 0).
    folds = np.array([1, 0, 1])
    got = residual_scale(model, Z, folds)
    np.testing.assert_allclose(got, [1.0, 4.0])  # medians of (1, 0, 25) and (4, 0, 36)
    # Without folds every member's error of every row counts: medians of (0, 0, 0, 1, 9, 25)
    # and (0, 0, 0, 4, 16, 36).
    np.testing.assert_allclose(residual_scale(model, Z, None), [0.5, 2.0])


def test_a_feature_rebuilt_exactly_gets_the_floor_not_zero():
    model = two_member_identity_model()
    Z = np.array([[0.0, 2.0], [0.0, 4.0]])  # feature 0 is always 0: no error anywhere
    got = residual_scale(model, Z, np.array([1, 1]))
    # medians 0 and 10 (of 4 and 16); the floor is a share of their mean, 5
    np.testing.assert_allclose(got, [FLOOR_SHARE * 5.0 + FLOOR, 10.0])


def test_the_graph_refuses_a_missing_or_bad_scale():
    model = two_member_identity_model()
    with pytest.raises(ValueError, match="residual_scale is needed"):
        ScoringGraph(model, IDENTITY_SCALER, "residual_cauchy")
    with pytest.raises(ValueError, match="and only by it"):
        ScoringGraph(model, IDENTITY_SCALER, "mse_scaled", residual_scale=np.ones(2))
    with pytest.raises(ValueError, match="one positive value per feature"):
        ScoringGraph(model, IDENTITY_SCALER, "residual_cauchy", residual_scale=np.array([1.0, 0]))


def test_the_cauchy_score_exports_to_onnx_with_the_same_numbers(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5)) * 3
    model = Autoencoder(AutoencoderConfig(input_dim=5, hidden_sizes=[8, 3], members=3))
    graph = ScoringGraph(model, AffineScaler("standard", X.mean(0), X.std(0)),
                         "residual_cauchy", residual_scale=np.array([0.1, 0.5, 1.0, 2.0, 1e-6]))
    path = tmp_path / "model.onnx"
    write_onnx(graph, 5, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = graph(torch.as_tensor(X, dtype=torch.float32))
    for ours, theirs in zip(expected, session.run(None, {"x": X.astype(np.float32)}),
                            strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-5)


def test_a_feature_rebuilt_almost_exactly_cannot_outweigh_a_typical_one():
    """Why the floor: feature 0's median held-out error is 1e-4 (a mostly-zero pixel), the
    others' 1. An error of 0.2 on it, a fifth of a typical error elsewhere, must not outrank an
    error three times the typical one on a typical feature."""
    medians = np.array([1e-4, 1.0, 1.0, 1.0])
    scale = floored(medians)
    floor = FLOOR_SHARE * medians.mean() + FLOOR  # 0.1 * 0.750025 + 1e-6
    np.testing.assert_allclose(scale, [floor, 1.0, 1.0, 1.0])
    model = Autoencoder(AutoencoderConfig(input_dim=4, hidden_sizes=[4], activation="relu"))
    with torch.no_grad():  # always answers 0: the squared error is the input squared
        for layer in (model.encoder[0], model.decoder[0]):
            layer.weight.zero_()
            layer.bias.zero_()
    scaler = AffineScaler("standard", np.zeros(4), np.ones(4))
    rows = torch.tensor([[math.sqrt(0.2), 0.0, 0.0, 0.0], [0.0, math.sqrt(3.0), 0.0, 0.0]])
    score = ScoringGraph(model, scaler, "residual_cauchy", residual_scale=scale)(rows)[2]
    torch.testing.assert_close(score, torch.tensor(
        [math.log1p(0.2 / floor) / 4, math.log(4.0) / 4]))  # log(3.67) < log(4)
    assert score[1] > score[0]
    # At a floor of 1 % of the mean the tiny feature would win: log(1 + 0.2 / 0.0075) > log(4).
    assert math.log1p(0.2 / (0.01 * medians.mean() + FLOOR)) > math.log(4.0)
