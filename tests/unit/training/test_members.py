"""Members: K networks side by side in one module, trained together, averaged at export."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from aeserve.training.defaults import default_members
from aeserve.training.export import ScoringGraph, write_onnx
from aeserve.training.model import Autoencoder, AutoencoderConfig, MemberLinear
from aeserve.training.preprocessing import fit_scaler
from aeserve.training.trainer import TrainConfig, train_autoencoder
from tests.unit.training.handmade import two_member_identity_model


def test_member_linear_is_k_independent_linear_layers():
    torch.manual_seed(0)
    layer = MemberLinear(4, 3, members=2)
    x = torch.randn(5, 4)
    out = layer(x)
    assert out.shape == (2, 5, 3)
    for k in range(2):
        expected = x @ layer.weight[k].T + layer.bias[k]
        torch.testing.assert_close(out[k], expected)
    assert not torch.equal(layer.weight[0], layer.weight[1])  # each member draws its own init
    per_member = torch.randn(2, 5, 4)  # a 3-D input gives each member its own rows
    torch.testing.assert_close(layer(per_member)[1], per_member[1] @ layer.weight[1].T
                               + layer.bias[1])


def test_the_score_is_the_mean_of_the_members_errors():
    graph = ScoringGraph(two_member_identity_model(), fit_scaler(np.array([[0.0, 0.0],
                                                                         [2.0, 4.0]]),
                                                                "standard"))
    # Scaling: offset (1, 2), scale (1, 2), so x = (3, 4) is z = (2, 1) and x = (1, 2) is z = 0.
    embedding, reconstruction, score, feature_errors = graph(torch.tensor([[3.0, 4.0],
                                                                            [1.0, 2.0]]))
    # Member 0 errs by 0, member 1 by z^2 = (4, 1): feature errors (2, 0.5), score 1.25.
    torch.testing.assert_close(feature_errors[0], torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(score, torch.tensor([1.25, 0.0]))
    # The reconstruction is the members' mean, z_hat = (1, 0.5), back in raw units: (2, 3).
    torch.testing.assert_close(reconstruction[0], torch.tensor([2.0, 3.0]))
    # Codes side by side: member 0's code is relu(z) = (2, 1), member 1's is (0, 0).
    torch.testing.assert_close(embedding[0], torch.tensor([2.0, 1.0, 0.0, 0.0]))


def test_members_export_to_onnx_with_the_same_numbers(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5))
    model = Autoencoder(AutoencoderConfig(input_dim=5, hidden_sizes=[8, 3], activation="relu",
                                          members=3))
    graph = ScoringGraph(model, fit_scaler(X, "standard"))
    path = tmp_path / "model.onnx"
    write_onnx(graph, 5, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"x": X.astype(np.float32)})
    with torch.no_grad():
        torch_out = graph(torch.as_tensor(X, dtype=torch.float32))
    assert onnx_out[0].shape == (64, 9)  # three codes of 3
    for ours, theirs in zip(torch_out, onnx_out, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-5)


def test_members_train_together_and_each_learns():
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(300, 1))
    Z = np.hstack([latent, 2 * latent, -latent]) + 0.01 * rng.normal(size=(300, 3))
    config = AutoencoderConfig(3, [4, 1], activation="tanh", members=3)
    result = train_autoencoder(Z[:240], Z[240:], config,
                               TrainConfig(epochs=150, seed=0, progress=False, min_steps=0,
                                           learning_rate=1e-2, batch_size=32))
    with torch.no_grad():
        z = torch.as_tensor(Z[240:], dtype=torch.float32)
        per_member = ((result.model(z)[1] - z) ** 2).sum(-1).mean(-1)
    start = float((z**2).sum(-1).mean())  # the loss of answering zero
    assert per_member.shape == (3,)
    assert torch.all(per_member < 0.1 * start)  # every member learned, not just their mean
    assert len(set(per_member.tolist())) == 3  # and they are different networks


def test_one_member_trains_exactly_as_a_single_network():
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(100, 4))
    single = train_autoencoder(Z[:80], Z[80:], AutoencoderConfig(4, [2]),
                               TrainConfig(epochs=3, seed=5, progress=False, min_steps=0))
    one = train_autoencoder(Z[:80], Z[80:], AutoencoderConfig(4, [2], members=1),
                            TrainConfig(epochs=3, seed=5, progress=False, min_steps=0))
    assert single.val_losses == one.val_losses


@pytest.mark.parametrize("overrides", [{"variant": "vae"}, {"variant": "contractive"},
                                       {"variant": "sparse-kl", "activation": "sigmoid"},
                                       {"tied_weights": True}, {"members": 0}])
def test_members_refused_where_the_objective_is_not_per_network(overrides):
    members = overrides.pop("members", 2)
    with pytest.raises(ValueError, match="members"):
        AutoencoderConfig(input_dim=4, hidden_sizes=[2], members=members, **overrides)


def test_default_members():
    assert default_members("ae") == 5 and default_members("denoising") == 5
    assert default_members("vae") == 1 and default_members("ae", tied_weights=True) == 1


def test_each_row_is_scored_by_the_member_that_never_saw_it():
    from aeserve.training.pipeline import held_out_member_scores

    graph = ScoringGraph(two_member_identity_model(),
                         fit_scaler(np.array([[0.0, 0.0], [2.0, 4.0]]), "standard"))
    X = np.array([[3.0, 4.0], [3.0, 4.0], [1.0, 6.0]])  # z = (2, 1), (2, 1), (0, 2)
    folds = np.array([0, 1, 1])
    # Row 0 is in fold 0: member 0 (exact) scores it 0. Rows 1 and 2 are in fold 1: member 1
    # (answers 0) scores them mean(z^2): (4 + 1) / 2 and (0 + 4) / 2.
    np.testing.assert_allclose(held_out_member_scores(graph, X, folds), [0.0, 2.5, 2.0])


def test_fold_assignment_is_balanced_and_seeded():
    from aeserve.training.trainer import fold_assignment

    folds = fold_assignment(23, 5, seed=3)
    assert sorted(np.bincount(folds).tolist()) == [4, 4, 5, 5, 5]
    assert np.array_equal(folds, fold_assignment(23, 5, seed=3))
    assert not np.array_equal(folds, fold_assignment(23, 5, seed=4))
    with pytest.raises(ValueError, match="at least 10 rows"):
        fold_assignment(9, 5, seed=0)


@pytest.mark.parametrize(("members", "fraction", "calibration", "rows"), [
    (None, None, "cross-fit", (200, 200)),  # the default: five members, cross-fitted
    (None, 0.25, "holdout", (150, 50)),     # asked for a held-out share
    (1, None, "holdout", (160, 40)),        # a single network holds out 0.2
])
def test_calibration_follows_the_members(tmp_path, members, fraction, calibration, rows):
    from aeserve.training.data import Dataset
    from aeserve.training.pipeline import TrainOptions, train_and_export

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2)) @ rng.normal(size=(2, 5))
    outcome = train_and_export(
        Dataset(X=X, y=None, feature_names=[f"f{i}" for i in range(5)], source="t"),
        TrainOptions(name="m", models_dir=tmp_path, members=members,
                     validation_fraction=fraction, command="t",
                     train=TrainConfig(epochs=3, min_steps=0, progress=False)))
    training = outcome.card.training
    assert training.calibration == calibration
    assert (training.rows_train, training.rows_validation) == rows
    assert outcome.card.architecture.members == (5 if members is None else members)


def test_train_time_evaluation_scores_the_same_normal_rows_whatever_the_model():
    from aeserve.training.pipeline import TrainOptions, resolve_plan, split_rows

    normal = np.arange(100, 200)  # the normal rows' numbers in the data

    def evaluated(members, fraction, seed=7):
        plan = resolve_plan(TrainOptions(name="m", members=members, validation_fraction=fraction,
                                         train=TrainConfig(seed=seed)),
                            n_features=2, n_normal_rows=100)
        rows = split_rows(normal, plan)
        return sorted(rows.validation[rows.evaluation].tolist())

    cross_fit, holdout, wide_holdout = evaluated(5, None), evaluated(1, None), evaluated(1, 0.5)
    assert len(cross_fit) == 20 and set(cross_fit) <= set(normal)  # a fifth of the normal rows
    assert cross_fit == holdout == wide_holdout
    narrow = evaluated(1, 0.1)  # holds out only 10 rows: evaluated on those, all of the fifth's
    assert len(narrow) == 10 and set(narrow) <= set(cross_fit)
    assert evaluated(5, None, seed=8) != cross_fit
