"""Windows of consecutive readings: the order, the cut and the names, checked by hand."""

import numpy as np
import pytest

from aeserve.artifact.windows import (
    flatten,
    per_feature,
    series_order,
    window_feature_names,
    window_rows,
)


def test_names_run_oldest_first_step_by_step():
    assert window_feature_names(["a", "b"], 3) == [
        "a[t-2]", "b[t-2]", "a[t-1]", "b[t-1]", "a[t]", "b[t]"]


def test_rows_are_ordered_by_series_then_time_and_ties_keep_file_order():
    series = np.array(["m2", "m1", "m2", "m1", "m1"])
    times = np.array(["2026-01-03", "2026-01-02", "2026-01-01", "2026-01-01", "2026-01-02"])
    order, bounds = series_order(series, times, 5)
    # m1: rows 3 (01-01), then 1 and 4 (both 01-02, file order); m2: rows 2 (01-01), 0 (01-03)
    assert order.tolist() == [3, 1, 4, 2, 0]
    assert bounds.tolist() == [0, 3, 5]


def test_without_columns_the_file_is_one_series_in_its_own_order():
    order, bounds = series_order(None, None, 4)
    assert order.tolist() == [0, 1, 2, 3] and bounds.tolist() == [0, 4]


def test_windows_end_at_each_stride_th_row_and_never_cross_a_series():
    order = np.array([3, 1, 4, 2, 0])
    bounds = np.array([0, 3, 5])
    assert window_rows(order, bounds, 2).tolist() == [[3, 1], [1, 4], [2, 0]]
    assert window_rows(order, bounds, 3).tolist() == [[3, 1, 4]]  # m2 is too short
    assert window_rows(np.arange(7), np.array([0, 7]), 3, stride=2).tolist() == [
        [0, 1, 2], [2, 3, 4], [4, 5, 6]]
    assert window_rows(order, bounds, 4).shape == (0, 4)
    with pytest.raises(ValueError, match="positive"):
        window_rows(order, bounds, 2, stride=0)


def test_flatten_lays_steps_side_by_side_and_per_feature_sums_them_back():
    X = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    windows = flatten(X, np.array([[0, 1], [1, 2]]))
    assert windows.dtype == np.float32
    assert windows.tolist() == [[1, 10, 2, 20], [2, 20, 3, 30]]
    assert per_feature(windows, 2).tolist() == [[3, 30], [5, 50]]
