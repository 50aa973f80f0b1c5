"""The defaults on data of the shapes users bring, each with planted anomalies: a few dozen rows,
mostly-zero binary features, one-hot categories, heavy tails, and far more features than rows
(post-ReLU, as image embeddings are). Each trains with `aeserve train`'s defaults and is scored
through the exported graph; the anomalies must rank above the normal test rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import roc_auc_score

from aeserve.training.data import Dataset
from aeserve.training.pipeline import TrainOptions, train_and_export
from aeserve.training.trainer import TrainConfig

Shape = tuple[np.ndarray, np.ndarray, np.ndarray]  # training rows, normal test rows, anomalies


def few_dense_rows(rng: np.random.Generator) -> Shape:
    """80 rows of 4 features driven by one factor; anomalies have the spread, not the link."""
    mix = rng.normal(size=(1, 4))
    def rows(n: int) -> np.ndarray:
        return rng.normal(size=(n, 1)) @ mix + 0.1 * rng.normal(size=(n, 4))
    return rows(80), rows(200), rng.normal(size=(20, 4)) * np.abs(mix)


def mostly_zero_binary(rng: np.random.Generator) -> Shape:
    """200 binary features, each row on a topic's few; anomalies take features from every topic."""
    masks = rng.random((5, 200)) < 0.1
    def rows(n: int) -> np.ndarray:
        on = np.where(masks[rng.integers(5, size=n)], 0.6, 0.01)
        return (rng.random((n, 200)) < on).astype(float)
    spread = np.clip(masks.mean(axis=0) * 0.6 + 0.01, 0, 1)
    return rows(1500), rows(300), (rng.random((30, 200)) < spread).astype(float)


def one_hot_categories(rng: np.random.Generator) -> Shape:
    """Two 10-way categories, the second within one step of the first, and a number that
    follows the first; anomalies pair the categories at random."""
    def rows(n: int, consistent: bool = True) -> np.ndarray:
        a = rng.integers(10, size=n)
        b = (a + rng.integers(2, size=n)) % 10 if consistent else rng.integers(10, size=n)
        return np.column_stack([np.eye(10)[a], np.eye(10)[b], a + 0.3 * rng.normal(size=n)])
    return rows(1500), rows(300), rows(30, consistent=False)


def heavy_tailed(rng: np.random.Generator) -> Shape:
    """Log-normal features of two factors; anomalies leave the factors' relation."""
    mix = rng.normal(size=(2, 20)) * 0.8
    def rows(n: int, off: bool = False) -> np.ndarray:
        logs = rng.normal(size=(n, 2)) @ mix + 0.1 * rng.normal(size=(n, 20))
        return np.exp(logs + (rng.normal(size=(n, 20)) if off else 0.0))
    return rows(1500), rows(300), rows(30, off=True)


def wide_few_rows(rng: np.random.Generator) -> Shape:
    """1,000 post-ReLU features of five factors and 150 training rows; anomalies off the
    factors' subspace."""
    mix = rng.normal(size=(5, 1000))
    def rows(n: int, off: bool = False) -> np.ndarray:
        X = rng.normal(size=(n, 5)) @ mix + 0.3 * rng.normal(size=(n, 1000))
        return np.maximum(X + (rng.normal(size=(n, 1000)) if off else 0.0), 0.0)
    return rows(150), rows(200), rows(20, off=True)


@pytest.mark.parametrize(("make", "seed", "least"), [
    (few_dense_rows, 1, 0.85), (mostly_zero_binary, 0, 0.65), (one_hot_categories, 0, 0.8),
    (heavy_tailed, 0, 0.95), (wide_few_rows, 0, 0.85)])
def test_the_defaults_find_planted_anomalies_in_every_shape(
        tmp_path, make: Callable[[np.random.Generator], Shape], seed: int, least: float):
    train, normal, anomalies = make(np.random.default_rng(seed))
    data = Dataset(X=train, y=None, source=make.__name__,
                   feature_names=[f"f{i}" for i in range(train.shape[1])])
    outcome = train_and_export(data, TrainOptions(
        name="shape", models_dir=tmp_path, command="test",
        train=TrainConfig(seed=seed, progress=False)))
    session = ort.InferenceSession(str(outcome.path / "model.onnx"))
    rows = np.vstack([normal, anomalies]).astype(np.float32)
    scores = session.run(["score"], {"x": rows})[0]
    assert np.isfinite(scores).all()
    truth = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))]
    assert roc_auc_score(truth, scores) >= least
