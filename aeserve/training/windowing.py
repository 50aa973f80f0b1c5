"""`aeserve train --window W`: train on windows of consecutive readings instead of single rows.

A reading that is normal on its own can be anomalous in its context (a value that rises too
fast, two sensors that stop moving together); a row model cannot see that. The windowed model is
the same autoencoder over the flattened window (aeserve/artifact/windows.py says the layout), so
every variant, the score, the calibration and the export apply unchanged: the series and time
columns order the rows, then each window is one training row. Its label is its last reading's,
since a row's served score is that of the window ending at it.

The windows are materialized (W times the readings' memory, divided by the stride): `--stride`
thins them for large data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from aeserve.artifact.card import Window
from aeserve.artifact.windows import flatten, series_order, window_feature_names, window_rows
from aeserve.training.data import DataError, Dataset, read_key_columns


@dataclass(frozen=True)
class WindowOptions:
    """The command line's window: its size, stride and the series and time columns."""

    size: int
    stride: int = 1
    series_column: str | None = None
    time_column: str | None = None

    def check(self) -> None:
        if self.size < 2:
            raise ValueError(f"--window must be at least 2 readings, got {self.size}")
        if self.stride < 1:
            raise ValueError(f"--stride must be at least 1, got {self.stride}")
        if self.series_column is not None and self.series_column == self.time_column:
            raise ValueError("--series-column and --time-column must be different columns")

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns that order the rows and are never features."""
        return tuple(c for c in (self.series_column, self.time_column) if c is not None)


def load_keys(path: Path, options: WindowOptions, reading: dict[str, Any]) -> dict[str, np.ndarray]:
    """The series and time columns of the data file, by name."""
    if not options.key_columns:
        return {}
    return read_key_columns(path, list(options.key_columns), **reading)


def windowed(data: Dataset, options: WindowOptions, keys: dict[str, np.ndarray]) -> Dataset:
    """The dataset of windows: `data`'s rows ordered by series and time, cut into windows of
    `options.size` rows every `options.stride` rows, each flattened into one row."""
    series = keys.get(options.series_column) if options.series_column else None
    times = keys.get(options.time_column) if options.time_column else None
    order, bounds = series_order(series, times, len(data.X))
    rows = window_rows(order, bounds, options.size, options.stride)
    if len(rows) < 2:
        longest = int(np.diff(bounds).max())
        raise DataError(f"{data.source}: {len(rows)} window(s) of {options.size} readings: "
                        f"the longest series has {longest} rows (a smaller --window?)")
    labels = None if data.y is None else np.ascontiguousarray(data.y[rows[:, -1]])
    return replace(data, X=flatten(data.X, rows), y=labels,
                   feature_names=window_feature_names(data.feature_names, options.size),
                   window=Window(size=options.size, stride=options.stride,
                                 features=list(data.feature_names),
                                 series_column=options.series_column,
                                 time_column=options.time_column),
                   files=())
