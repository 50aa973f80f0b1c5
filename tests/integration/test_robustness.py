"""What trips other detectors: constant features, tiny training sets, heavy tails."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from aeserve.training.data import Dataset
from aeserve.training.pipeline import TrainOptions, train_and_export
from aeserve.training.trainer import TrainConfig


def train(tmp_path, X: np.ndarray, **train_kw):
    data = Dataset(X=X, y=None, feature_names=[f"f{i}" for i in range(X.shape[1])],
                   source="synthetic")
    outcome = train_and_export(data, TrainOptions(
        name="robust", models_dir=tmp_path, command="test",
        train=TrainConfig(progress=False, **train_kw)))
    session = ort.InferenceSession(str(outcome.path / "model.onnx"))
    return outcome.card, lambda rows: session.run(["score"], {"x": rows.astype(np.float32)})[0]


def test_constant_feature_does_not_explode_scores(tmp_path):
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=(300, 3)), np.full(300, 1000.0)])
    card, score = train(tmp_path, X, epochs=20)
    normal = score(X[:50])
    moved = X[:50].copy()
    moved[:, 3] = 1001.0  # the constant feature moves by one unit (0.1% of its value)
    assert np.isfinite(score(moved)).all()
    assert np.median(score(moved)) < 2 * card.threshold  # no explosion
    far = X[:5].copy()
    far[:, 3] = 10_000.0  # ten times its training value
    assert (score(far) > card.threshold).all()
    assert np.median(normal) < card.threshold


def test_training_set_smaller_than_a_batch(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12, 4))  # 12 rows, five folds of 2 or 3, default batch 128
    card, score = train(tmp_path, X, epochs=30)
    assert card.training.rows_train == card.training.rows_validation == 12
    assert np.isfinite(score(X)).all()
    assert np.isfinite(card.threshold)


def test_heavy_tailed_features(tmp_path):
    rng = np.random.default_rng(2)
    latent = rng.normal(size=(600, 2))
    X = np.exp(np.column_stack([latent, latent @ rng.normal(size=(2, 3))]))  # log-normal
    card, score = train(tmp_path, X, epochs=40)
    assert card.parity_max_abs_error <= 1e-4
    scores = score(X)
    assert np.isfinite(scores).all()
    off_manifold = X[:20].copy()
    off_manifold[:, 2] = X[:, 2].max() * 3  # one feature far beyond anything seen
    assert np.mean(score(off_manifold) > card.threshold) >= 0.9
