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




def test_p_values_follow_the_percentiles_then_a_fitted_tail():
    import math

    from aeserve.artifact.scores import p_values, tail_scale

    quantiles = [float(k) for k in range(101)]  # the k-th percentile is k
    levels = [math.log(0.05 / p) for p in (0.04, 0.03, 0.02, 0.01)]
    beta = sum(e * v for e, v in zip((1, 2, 3, 4), levels, strict=True)) / sum(
        v * v for v in levels)
    assert tail_scale(quantiles) == pytest.approx(beta)  # 2.789 by hand
    scores = np.array([0.0, 50.0, 95.0, 99.0, 100.0, 1000.0, 2000.0])
    got = p_values(scores, quantiles)
    assert got[:4] == pytest.approx([1.0, 0.5, 0.05, 0.01])  # 1 - percentile / 100
    assert got[4] == pytest.approx(0.01 * math.exp(-1 / beta))  # the tail, from the 99th
    # beyond the largest held-out score (100, the 100th percentile) rows still rank
    assert 0 < got[6] < got[5] < got[4]
    assert np.all(np.diff(p_values(np.linspace(-5, 200, 2000), quantiles)) <= 0)


def test_a_flat_tail_still_gives_p_values():
    from aeserve.artifact.scores import p_values

    flat = [0.0] * 50 + [1.0] * 51
    got = p_values(np.array([0.5, 1.0, 1.0 + 1e-3, 5.0]), flat)
    assert np.all(np.isfinite(got)) and got[0] > got[2] >= got[3] >= 0


def test_score_at_quantile_inverts_percentiles_and_the_tail():
    import math

    from aeserve.artifact.scores import p_values, score_at_quantile, tail_scale

    quantiles = [float(k) for k in range(101)]  # the k-th percentile is k
    assert score_at_quantile(quantiles, 0.5) == pytest.approx(50.0)
    assert score_at_quantile(quantiles, 0.425) == pytest.approx(42.5)
    assert score_at_quantile(quantiles, 0.99) == pytest.approx(99.0)
    # Beyond the 99th: the tail, 99 + beta ln(0.01 / 0.001) for a false alarm rate of 0.001.
    beta = tail_scale(quantiles)
    assert score_at_quantile(quantiles, 0.999) == pytest.approx(99.0 + beta * math.log(10.0))
    for level in (0.3, 0.9, 0.995, 0.9999):
        score = score_at_quantile(quantiles, level)
        assert p_values(np.array([score]), quantiles)[0] == pytest.approx(1.0 - level)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        score_at_quantile(quantiles, 1.0)
