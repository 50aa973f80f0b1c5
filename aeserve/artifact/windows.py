"""Windows of consecutive readings: what a windowed model scores.

A windowed model (`aeserve train --window W`) learns windows of W consecutive rows of one series,
flattened step by step, oldest first: `[x_{t-W+1}, ..., x_{t-1}, x_t]`, W * d values. A row's
score is that of the window that ends at it; the first W - 1 rows of a series have none. Training,
batch scoring and the stream state (aeserve/artifact/streams.py) all cut and name windows here,
so a window holds the same values in the same order wherever it is scored, and a streamed score
equals the batch score of the same window.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np


def window_feature_names(features: Sequence[str], size: int) -> list[str]:
    """The graph's input names for windows of `size` rows of `features`: `name[t-k]` for the
    reading k steps before the window's last, `name[t]` for the last."""
    return [f"{name}[t-{lag}]" if lag else f"{name}[t]"
            for lag in range(size - 1, -1, -1) for name in features]


def series_order(series: np.ndarray | None, times: np.ndarray | None,
                 n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, bounds): row numbers sorted by series, then by time within a series (file order
    where times tie, or without a time column), and the positions in `order` where each series
    starts, with `n_rows` at the end. Without a series column every row is one series.

    Series ids and times may be numbers, strings (ISO 8601 times sort as text) or datetimes:
    both are ranked first, so any type numpy can sort will do."""
    keys = []
    if times is not None:
        keys.append(_ranks(times, "time"))
    codes = _ranks(series, "series") if series is not None else np.zeros(n_rows, dtype=np.int64)
    keys.append(codes)
    order = np.lexsort(keys)  # stable: the last key first, ties in file order
    starts = np.flatnonzero(np.diff(codes[order])) + 1
    return order, np.concatenate([[0], starts, [n_rows]]).astype(np.int64)


def _ranks(values: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.unique(np.asarray(values), return_inverse=True)[1].astype(np.int64).ravel()
    except TypeError as exc:  # mixed types that do not compare
        raise ValueError(f"the {what} column's values cannot be ordered: {exc}") from None


def window_rows(order: np.ndarray, bounds: np.ndarray, size: int, stride: int = 1) -> np.ndarray:
    """[windows, size] row numbers: within each series (`series_order`), the windows of `size`
    consecutive rows ending at its `size`-th row and every `stride`-th row after it. A series
    shorter than `size` gives none."""
    if size < 1 or stride < 1:
        raise ValueError(f"window size and stride must be positive, got {size} and {stride}")
    steps = np.arange(size - 1, -1, -1)
    parts = []
    for start, stop in itertools.pairwise(bounds):
        ends = np.arange(start + size - 1, stop, stride)
        if len(ends):
            parts.append(order[ends[:, None] - steps[None, :]])
    if not parts:
        return np.empty((0, size), dtype=np.int64)
    return np.concatenate(parts).astype(np.int64, copy=False)


def flatten(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The windows numbered by `rows` ([windows, size]) of the readings `X` ([rows, d]), as the
    graph reads them: [windows, size * d] float32, oldest step first."""
    return np.ascontiguousarray(X[rows].reshape(len(rows), -1), dtype=np.float32)


def per_feature(errors: np.ndarray, size: int) -> np.ndarray:
    """A windowed graph's per-input errors ([windows, size * d]) summed over the window's steps:
    [windows, d], one error per feature, so that an explanation names a reading's feature."""
    errors = np.asarray(errors)
    return errors.reshape(len(errors), size, -1).sum(axis=1)
