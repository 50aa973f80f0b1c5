"""The alarm rule, step by step against hand-worked sequences."""

import pytest
from pydantic import ValidationError

from aeserve.artifact.alarms import AlarmPolicy, AlarmState


def run(policy: AlarmPolicy, scores: list[float], threshold: float = 1.0):
    state = AlarmState(policy)
    return [state.step(s, threshold) for s in scores]


def test_ewma_smooths_with_the_newest_score_weighted_alpha():
    steps = run(AlarmPolicy(smoothing="ewma", alpha=0.5, k=1, n=1), [0.0, 2.0, 2.0, 0.0])
    assert [s for s, _, _ in steps] == [0.0, 1.0, 1.5, 0.75]
    # 1.0 is not above the threshold 1.0; 1.5 is; 0.75 is not
    assert [(on, e) for _, on, e in steps] == [(False, None), (False, None), (True, "start"),
                                               (False, "end")]


def test_k_of_n_needs_k_high_scores_among_the_last_n():
    policy = AlarmPolicy(smoothing="none", k=2, n=3)
    steps = run(policy, [2, 0, 0, 2, 0, 2, 2, 0, 0, 0])
    # last 3 above:  1  1  0  1  1  2* 2  2  1  0
    assert [e for _, _, e in steps] == [None, None, None, None, None, "start", None, None,
                                        "end", None]
    assert [on for _, on, _ in steps] == [False] * 5 + [True] * 3 + [False] * 2


def test_one_spike_never_alarms_under_the_default_policy_but_a_lasting_fault_does():
    assert not any(on for _, on, _ in run(AlarmPolicy(), [0.1, 0.1, 50.0, 0.1, 0.1, 0.1]))
    # medians of 3: 0.1 0.1 0.1 0.1 5 5 5 5 5 0.1 0.1 0.1: above 1 at readings 4-8, so 3 of
    # the last 5 from reading 6 until reading 11, whose last 5 hold two
    steps = run(AlarmPolicy(), [0.1, 0.1, 0.1, 5, 5, 5, 5, 5, 0.1, 0.1, 0.1, 0.1])
    assert [e for _, _, e in steps].index("start") == 6
    assert [e for _, _, e in steps].index("end") == 11


def test_the_median_ignores_one_outlier_reading():
    steps = run(AlarmPolicy(smoothing="median", span=3, k=1, n=1), [0.0, 9.0, 0.0, 2.0, 2.0])
    assert [s for s, _, _ in steps] == [0.0, 4.5, 0.0, 2.0, 2.0]


def test_no_alarm_starts_during_the_quiet_readings_after_one_ends():
    policy = AlarmPolicy(smoothing="none", k=1, n=1, quiet=2)
    steps = run(policy, [2, 0, 2, 2, 2, 0])
    # start, end (quiet 2), suppressed, suppressed, start again, end
    assert [e for _, _, e in steps] == ["start", "end", None, None, "start", "end"]


def test_a_policy_refuses_k_above_n_and_unknown_keys():
    with pytest.raises(ValidationError, match="cannot exceed"):
        AlarmPolicy(k=4, n=3)
    with pytest.raises(ValidationError, match="Extra inputs"):
        AlarmPolicy.model_validate({"kk": 1})
