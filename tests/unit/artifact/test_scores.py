"""What a score means: percentiles among normal scores and the verdict, by hand."""

import numpy as np
import pytest

from aeserve.artifact.scores import percentiles, verdicts


def test_percentiles_interpolate_between_stored_quantiles():
    quantiles = [float(i) for i in range(101)]  # score i sits at the i-th percentile
    got = percentiles(np.array([-1.0, 0.0, 42.5, 99.9, 100.0, 250.0]), quantiles)
    assert got.tolist() == pytest.approx([0.0, 0.0, 42.5, 99.9, 100.0, 100.0])


def test_percentiles_with_a_flat_run_of_quantiles():
    quantiles = [0.0] * 50 + [1.0] * 51  # half the normal scores are exactly 0
    got = percentiles(np.array([0.0, 0.5, 1.0]), quantiles)
    assert got.tolist() == pytest.approx([49.0, 49.5, 100.0])


def test_verdict_is_strictly_above_threshold():
    assert verdicts(np.array([0.5, 1.0, 1.5]), 1.0).tolist() == [False, False, True]


