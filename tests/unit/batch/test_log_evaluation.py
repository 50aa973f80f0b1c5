"""Threshold proposals from labelled scores, checked against counts made by hand."""

from __future__ import annotations

import numpy as np
import pytest

from aeserve.batch.log_evaluation import confusion, propose, rates

# ranked: 3.0 (1), 2.0 (1), 0.9 (1), 0.9 (0), 0.5 (0), 0.1 (0)
SCORES = np.array([0.1, 0.5, 0.9, 0.9, 2.0, 3.0])
LABELS = np.array([0, 0, 1, 0, 1, 1])


def test_served_confusion_and_rates_by_hand():
    counts = confusion(LABELS, SCORES > 1.0)
    assert counts == {"true_positive": 2, "false_positive": 0, "true_negative": 3,
                      "false_negative": 1}
    assert rates(counts).recall == pytest.approx(2 / 3)
    assert rates(counts).precision == 1.0 and rates(counts).false_alarm_rate == 0.0


@pytest.mark.parametrize(("target", "threshold", "flagged"), [
    ({"target_precision": 1.0}, 1.45, 2),  # above the tie at 0.9, which holds a normal row
    ({"target_precision": 0.7}, 0.7, 4),   # 3 of 4; flagging 5 gives 3 of 5 = 0.6
    ({"target_false_alarm_rate": 0.34}, 0.7, 4),  # one of three normal rows flagged
    ({"target_false_alarm_rate": 0.0}, 1.45, 2),
])
def test_the_lowest_threshold_that_meets_the_target(target, threshold, flagged):
    proposal = propose(SCORES, LABELS, **target)
    assert proposal.threshold == pytest.approx(threshold) and proposal.flagged == flagged
    assert np.count_nonzero(proposal.threshold < SCORES) == flagged


def test_flagging_every_row_goes_a_little_below_the_lowest_score():
    proposal = propose(SCORES, LABELS, target_precision=0.5)
    assert proposal.flagged == 6 and proposal.threshold == pytest.approx(0.099)


def test_an_unreachable_target_proposes_nothing():
    assert propose(np.array([1.0, 2.0]), np.array([1, 0]), target_precision=0.9) is None
