"""Rows of numbers sent as JSON, checked and made a float32 matrix, or the error naming the
first problem.

One reading of JSON rows for every part that takes them: the server's routes (through
aeserve/serving/codecs.py, which turns a `RowError` into its HTTP error of the same code) and
the stream runner's messages (aeserve/batch/stream_scorer.py). The same bad row gets the same
code and message wherever it is sent. Rows are lists in the model's feature order or objects
keyed by feature name; every value is an integer or a float within float32's range (booleans
and strings are not numbers here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Largest float32: a value beyond it cannot reach the model.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class RowError(ValueError):
    """A problem with the rows: `code` names its kind (as the server's error codes do) and
    `detail` where it is (row, column, expected width...)."""

    def __init__(self, code: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


def decode_rows(instances: Any, feature_names: Sequence[str], max_rows: int,
                field: str = "instances") -> np.ndarray:
    """A parsed JSON list of rows as a float32 [N, len(feature_names)] matrix, or the RowError
    that names the first problem (`field`: what the body calls the list). Values that are
    finite but beyond float32's range become inf here; `check_rows` names them."""
    if not isinstance(instances, list):
        raise RowError("invalid_instances",
                       f'"{field}" must be a list of rows, got {type(instances).__name__}')
    if not instances:
        raise RowError("empty_instances", f'"{field}" is empty: send at least one row')
    if len(instances) > max_rows:
        raise RowError("too_many_rows", f"{len(instances)} rows exceed the limit of {max_rows}",
                       rows=len(instances), max_rows=max_rows)
    if all(isinstance(row, dict) for row in instances):
        values = _named_rows(instances, feature_names)
    else:
        values = _positional_rows(instances, len(feature_names))
    return to_float32(np.asarray(values, dtype=np.float64))


def check_rows(rows: np.ndarray, max_rows: int) -> None:
    """At most `max_rows` rows and every value a finite float32, else the RowError naming it."""
    if rows.shape[0] > max_rows:
        raise RowError("too_many_rows", f"{rows.shape[0]} rows exceed the limit of {max_rows}",
                       rows=int(rows.shape[0]), max_rows=max_rows)
    # A float64 sum of float32 values cannot overflow, so it is finite exactly when every value
    # is: one pass, no temporary array. Only a failing body pays for locating the culprit.
    if not np.isfinite(rows.sum(dtype=np.float64)):
        finite = np.isfinite(rows)
        row, column = (int(v) for v in np.argwhere(~finite)[0])
        raise RowError("non_finite", f"row {row}, column {column}: {rows[row, column]} is not a "
                                     "finite float32 number (NaN, infinity, or beyond float32's "
                                     "range)", row=row, column=column)


def check_row_lengths(lengths: Sequence[int], width: int) -> None:
    """Refuse ragged rows, or rows of another width than the model's."""
    first = lengths[0]
    for i, length in enumerate(lengths):
        if length != first:
            raise RowError("ragged_rows", f"rows have different lengths: row 0 has {first} "
                                          f"values, row {i} has {length}; every row needs "
                                          f"{width}", row=i, expected=width)
    if first != width:
        raise RowError("wrong_width", f"rows have {first} values but the model expects {width}",
                       expected=width, received=first)


def to_float32(values: np.ndarray) -> np.ndarray:
    """Cast to float32; values beyond its range become inf, which `check_rows` then names.

    `np.errstate` costs more than a small request's whole decoding, so it is entered only when
    a value is out of range.
    """
    if values.size == 0 or np.abs(values).max() <= FLOAT32_MAX:
        return values.astype(np.float32)
    with np.errstate(over="ignore"):
        return values.astype(np.float32)


def _positional_rows(instances: list, width: int) -> list:
    for i, row in enumerate(instances):
        if not isinstance(row, list):
            raise RowError("invalid_instances",
                           f"row {i} is a {type(row).__name__}: every row must be a list of "
                           f"{width} numbers (or every row an object of named features)", row=i)
    check_row_lengths([len(row) for row in instances], width)
    for i, row in enumerate(instances):
        for j, value in enumerate(row):
            _check_number(value, i, j)
    return instances


def _named_rows(instances: list[dict], feature_names: Sequence[str]) -> list[list[float]]:
    expected = set(feature_names)
    rows = []
    for i, row in enumerate(instances):
        if row.keys() != expected:
            missing = sorted(expected - row.keys())
            unknown = sorted(row.keys() - expected)
            raise RowError("feature_mismatch",
                           f"row {i} does not name exactly the model's features"
                           + (f"; missing: {missing}" if missing else "")
                           + (f"; unknown: {unknown}" if unknown else ""),
                           row=i, missing=missing, unknown=unknown)
        values = [row[name] for name in feature_names]
        for j, value in enumerate(values):
            _check_number(value, i, j, feature_names[j])
        rows.append(values)
    return rows


def _check_number(value: Any, row: int, column: int, name: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        where = f"feature {name!r}" if name is not None else f"column {column}"
        raise RowError("non_numeric", f"row {row}, {where}: {value!r} is not a number",
                       row=row, column=column)
    if isinstance(value, float) and not math.isfinite(value):
        raise RowError("non_finite", f"row {row}, column {column}: {value} is not a finite "
                                     "number", row=row, column=column)
    # an integer is compared exactly: math.isfinite of 10**400 would raise OverflowError
    if isinstance(value, int) and not -FLOAT32_MAX <= value <= FLOAT32_MAX:
        raise RowError("non_finite", f"row {row}, column {column}: an integer of "
                                     f"{len(str(abs(value)))} digits is beyond float32's range",
                       row=row, column=column)
