"""Training holds the data once: no scaled, per-member or float64 copy of it.

numpy reports its allocations to tracemalloc, so the peak of traced memory during a training run
bounds every array the pipeline makes (torch's tensors are not traced; the trainer's only
data-sized tensors are row-number grids, checked on their own below).
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import torch

from aeserve.training.data import Dataset
from aeserve.training.pipeline import TrainOptions, train_and_export
from aeserve.training.trainer import TrainConfig, _epoch_order, fold_assignment


def test_a_training_run_allocates_less_than_the_data_again(tmp_path, monkeypatch):
    from aeserve.training import residual_scale

    monkeypatch.setattr(residual_scale, "MAX_ROWS", 20_000)  # its sample, bounded, is not data
    rows, width = 300_000, 16
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(rows, 3)) @ rng.normal(size=(3, width))).astype(np.float32)
    y = (rng.random(rows) < 0.02).astype(np.int64)
    data = Dataset(X=X, y=y, feature_names=[f"f{j}" for j in range(width)], source="t")
    options = TrainOptions(name="m", models_dir=tmp_path, command="t",
                           train=TrainConfig(epochs=1, min_steps=0, progress=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A first, small run imports what training imports (onnx, scikit-learn, matplotlib):
        # modules loaded once are not what this test measures.
        train_and_export(Dataset(X=X[:2000], y=y[:2000], feature_names=data.feature_names,
                                 source="t"), options)
        tracemalloc.start()
        try:
            outcome = train_and_export(data, options)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert outcome.card.training.rows_train == int((y == 0).sum())
    # The data is 18 MiB as float32; a scaled float64 copy of its normal rows alone would be
    # 36 MiB. What remains is row numbers, a float64 per row of held-out scores (2.3 MiB), and
    # chunks of at most 16,384 rows.
    assert peak < X.nbytes, f"{peak / 2**20:.1f} MiB traced for {X.nbytes / 2**20:.1f} MiB"


def test_epoch_orders_are_int32_and_the_same_permutations_as_int64():
    folds = fold_assignment(1000, 5, seed=0)
    from aeserve.training.trainer import _cross_fit_rows

    grid, _ = _cross_fit_rows(folds, torch.Generator().manual_seed(0))
    order = _epoch_order(grid.shape[1], 5, grid, None, torch.Generator().manual_seed(1))
    assert grid.dtype == order.dtype == torch.int32 and order.shape == (5, 800)
    generator = torch.Generator().manual_seed(1)
    for k in range(5):  # each member: its own rows, in a fresh int64 permutation's order
        expected = grid[k][torch.randperm(800, generator=generator)]
        assert torch.equal(order[k], expected)
        assert set(order[k].tolist()) == set(np.flatnonzero(folds != k).tolist())
