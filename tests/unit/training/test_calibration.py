"""Threshold rules and the stored score quantiles, against hand-computed values."""

import numpy as np
import pytest

from aeserve.training.calibration import parse_threshold_rule, score_quantiles, threshold_from_rule


def test_threshold_is_the_quantile_of_normal_scores():
    scores = np.arange(1, 101, dtype=float)  # 1..100
    assert threshold_from_rule(scores, "quantile:0.99") == pytest.approx(99.01)
    table = score_quantiles(scores)
    assert len(table) == 101 and table[0] == 1.0 and table[-1] == 100.0
    assert table[50] == pytest.approx(50.5)


def test_sigma_and_contamination_rules_by_hand():
    normal = np.array([1.0, 2.0, 3.0, 4.0])  # mean 2.5, population std sqrt(1.25)
    assert threshold_from_rule(normal, "sigma:2") == pytest.approx(2.5 + 2 * 1.25 ** 0.5)
    fit = np.arange(1, 101, dtype=float)  # 1..100, 10% anomalous by assumption
    assert threshold_from_rule(normal, "contamination:0.1", fit) == pytest.approx(90.1)
    assert (fit > threshold_from_rule(normal, "contamination:0.1", fit)).sum() == 10


@pytest.mark.parametrize("rule", ["quantile:1.5", "quantile:0", "quantile:abc", "top:3",
                                  "contamination:0.7", "sigma:-1", "sigma:x"])
def test_bad_threshold_rules_are_refused(rule):
    with pytest.raises(ValueError, match="threshold rule"):
        parse_threshold_rule(rule)
