"""Columns that look like a label or a row index, and constant ones."""

from __future__ import annotations

import numpy as np

from aeserve.training.column_checks import constant_columns, suspect_columns
from aeserve.training.data import Dataset


def dataset(columns: dict[str, np.ndarray]) -> Dataset:
    return Dataset(X=np.column_stack(list(columns.values())).astype(np.float64), y=None,
                   feature_names=list(columns), source="d.csv")


def test_labels_are_found_by_name_and_by_a_named_0_1_column():
    rng = np.random.default_rng(0)
    binary = (rng.random(50) < 0.2).astype(float)
    found = suspect_columns(dataset({"reading": rng.normal(size=50), "y": rng.normal(size=50),
                                     "Is Anomaly": binary, "anomaly_label_v2": binary,
                                     "valve_open": binary}))
    assert [p.split(" looks")[0] for p in found] == [
        "column 'y'", "column 'Is Anomaly'", "column 'anomaly_label_v2'"]
    assert "--label-column 'Is Anomaly'" in found[1] and "0/1 values" in found[1]


def test_row_indexes_are_found_by_name_and_by_counting_the_rows():
    rng = np.random.default_rng(0)
    found = suspect_columns(dataset({"": rng.normal(size=30), "Unnamed: 0": rng.normal(size=30),
                                     "n": np.arange(30), "m": np.arange(1, 31),
                                     "k": np.arange(30) * 2, "x": rng.normal(size=30)}))
    assert [p.split(" looks")[0] for p in found] == [
        "column ''", "column 'Unnamed: 0'", "column 'n'", "column 'm'"]
    assert all("--id-column" in p for p in found)


def test_constant_columns():
    assert constant_columns(dataset({"a": np.ones(5), "b": np.arange(5)})) == ["a"]
