"""The batch scorer's fast percentiles equal the server's, bit for bit, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest

from aeserve.artifact.scores import percentiles
from aeserve.batch.quantiles import Percentiles, ceil_float32


def edge_scores(q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random scores plus every quantile, its float32 neighbours, and values outside the range."""
    q32 = q.astype(np.float32)
    return np.concatenate([
        (rng.lognormal(size=3000) * q[50]).astype(np.float32),
        q32,
        np.nextafter(q32, np.float32(0)),
        np.nextafter(q32, np.float32(np.inf)),
        np.array([0.0, -1.0, 1e30, np.inf, -np.inf, np.nan], dtype=np.float32),
    ])


@pytest.mark.parametrize("seed", range(40))
def test_equals_the_server_percentiles(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = np.sort(rng.lognormal(sigma=2.0, size=101) * rng.choice([1e-4, 1.0, 1e4]))
    if seed % 3 == 0:  # runs of equal quantiles (a flat score distribution)
        q[10:25] = q[10]
        q[60:62] = q[60]
    if seed % 7 == 0:
        q[:] = q[0]
    scores = edge_scores(q, rng)
    expected = percentiles(scores, q.tolist())
    got = Percentiles(q.tolist())(scores)
    np.testing.assert_array_equal(got, expected)  # NaN positions must match too
    assert got.dtype == expected.dtype == np.float64


def test_positions_are_searchsorted_right() -> None:
    q = np.array([0.0, 0.5, 0.5, 1.0] + [2.0] * 97)
    scores = np.array([-1, 0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3], dtype=np.float32)
    table = Percentiles(q)
    np.testing.assert_array_equal(table.positions(scores),
                                  np.searchsorted(q, scores.astype(np.float64), side="right"))
    # at a run of equal quantiles the percentile is the run's top: 2 (of 0..100) for 0.5
    assert table(scores)[3] == pytest.approx(2.0)


def test_ceil_float32_rounds_up() -> None:
    values = np.array([0.1, 1 / 3, 1.0, 1e-40, 3.5e38], dtype=np.float64)
    rounded = ceil_float32(values)
    assert (rounded.astype(np.float64) >= values).all()
    below = np.nextafter(rounded, np.float32(-np.inf)).astype(np.float64)
    assert (below < values).all()


def test_float64_scores_fall_back_to_the_reference() -> None:
    q = np.linspace(0, 1, 101)
    scores = np.array([0.123456789012, 0.5, 2.0])
    np.testing.assert_array_equal(Percentiles(q)(scores), percentiles(scores, q))
