"""Read a user's tabular data (CSV, Parquet, NPZ) into one float64 matrix.

Why float64: fitting preprocessing on float64 keeps means and deviations of large-valued features
exact; the network itself trains in float32.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pyarrow is imported where a table is read
    import pyarrow as pa


class DataError(ValueError):
    """The data file cannot be used for training; the message says why."""


@dataclass(frozen=True)
class Dataset:
    """Features, optional 0/1 labels (1 = anomaly) and the feature names, in file order."""

    X: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]
    source: str
    #: Columns of the file that are not features: the label, the id, and those left out
    #: (`--columns`, `--drop-columns`). Recorded in the model card.
    label_column: str | None = None
    id_column: str | None = None
    dropped_columns: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """sha256 of the feature values and names: identifies the data a model saw."""
        digest = hashlib.sha256()
        digest.update("\x1f".join(self.feature_names).encode())
        digest.update(np.ascontiguousarray(self.X, dtype=np.float64).tobytes())
        return digest.hexdigest()


#: Cells read as missing: only an empty cell. A token such as "n/a" or "NA" is a value like any
#: other, so a column holding one is reported with the row and the token rather than silently
#: losing a row's meaning; `--na-values` declares the tokens a file uses. Training refuses missing
#: values (the error names the first), since a network needs every feature of every row.
NA_VALUES: tuple[str, ...] = ("",)

#: Delimiters recognised from the file's first lines when none is given.
DELIMITERS = ",;\t|"
_SNIFF_BYTES = 64 * 1024


def add_reading_arguments(parser: argparse.ArgumentParser) -> None:
    """`--na-values` and `--delimiter`, for every command that reads a user's file."""
    shown = ", ".join(repr(v) for v in NA_VALUES)
    parser.add_argument("--na-values", nargs="*", metavar="TOKEN", default=None,
                        help="CSV cells read as missing, which training refuses with their "
                             f"line (default: {shown}, an empty cell only; 'n/a' or 'NA' are "
                             "then reported as non-numeric values)")
    parser.add_argument("--delimiter", default=None,
                        help="CSV field delimiter (default: recognised among "
                             "comma, semicolon, tab and |; a comma when unsure)")


def reading_options(args: argparse.Namespace) -> dict[str, Any]:
    """`load_dataset`'s keyword arguments from the parsed `add_reading_arguments` options."""
    return {"na_values": NA_VALUES if args.na_values is None else tuple(args.na_values),
            "delimiter": args.delimiter}


@dataclass(frozen=True)
class ColumnChoice:
    """Which columns of a file are features: all but the label and the id, or only `columns`,
    less `drop`. Every name given must be a column of the file."""

    label: str | None = None
    id: str | None = None
    columns: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()

    def features(self, names: Sequence[str], source: str) -> list[str]:
        named = [n for n in (self.label, self.id, *(self.columns or ()), *self.drop)
                 if n is not None]
        unknown = [n for n in dict.fromkeys(named) if n not in names]
        if unknown:
            raise DataError(f"{source}: no column {', '.join(map(repr, unknown))}; the columns "
                            f"are {list(names)}")
        chosen = list(self.columns) if self.columns is not None else list(names)
        return [n for n in chosen if n not in (self.label, self.id) and n not in self.drop]


def load_dataset(path: str | Path, label_column: str | None = None,
                 na_values: Sequence[str] = NA_VALUES, delimiter: str | None = None,
                 choice: ColumnChoice | None = None) -> Dataset:
    """Load CSV (header row), Parquet or NPZ (`X`, optional `y`) by file extension; `choice`
    picks the feature columns (its label, if any, wins over `label_column`).

    Raises DataError naming the file and, for a bad value, its row, column and the value."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    choice = choice or ColumnChoice(label=label_column)
    if choice.label is None and label_column is not None:
        choice = replace(choice, label=label_column)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, choice)
    if suffix in {".csv", ".parquet", ".pq"}:
        table = (_read_csv(path, na_values, delimiter) if suffix == ".csv"
                 else _read_parquet(path))
        return _from_table(table, choice, path.name, first_line=2 if suffix == ".csv"
                           else None)
    raise DataError(f"unsupported data format {suffix!r}: use .csv, .parquet or .npz")


def sniff_delimiter(path: Path) -> str:
    """The delimiter of a CSV file's first lines among `DELIMITERS` (a comma when unsure)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        sample = handle.read(_SNIFF_BYTES)
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def _read_csv(path: Path, na_values: Sequence[str], delimiter: str | None) -> pa.Table:
    import pyarrow.csv as pv

    try:
        table = pv.read_csv(
            path, parse_options=pv.ParseOptions(delimiter=delimiter or sniff_delimiter(path)),
            convert_options=pv.ConvertOptions(null_values=list(na_values),
                                              strings_can_be_null=True))
    except Exception as exc:  # pyarrow raises its own ArrowInvalid family
        raise DataError(f"cannot parse CSV {path.name}: {exc}") from exc
    return table


def _read_parquet(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as exc:
        raise DataError(f"cannot read Parquet {path.name}: {exc}") from exc


def _place(row: int, first_line: int | None) -> str:
    """Where a data row is, for a person: its line in a CSV file, its number otherwise."""
    return f"line {row + first_line}" if first_line is not None else f"row {row + 1}"


def _from_table(table: pa.Table, choice: ColumnChoice, source: str,
                first_line: int | None = None) -> Dataset:
    import pyarrow as pa

    if table.num_rows == 0:
        raise DataError(f"{source}: the data has no rows (a header alone?)")
    columns = table.column_names
    label_column = choice.label
    if label_column is not None and label_column not in columns:
        raise DataError(f"{source}: label column {label_column!r} not in {sorted(columns)}")
    names = choice.features(columns, source)
    if not names:
        raise DataError(f"{source}: no feature columns")
    features = []
    for name in names:
        column = table.column(name)
        if column.null_count:
            values = column.to_pylist()
            row = next(i for i, v in enumerate(values) if v is None)
            raise DataError(f"{source}: column {name!r} has {column.null_count} missing values, "
                            f"the first at {_place(row, first_line)}")
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type)):
            raise DataError(f"{source}: column {name!r} is not numeric: "
                            + _first_non_number(column.to_pylist(), first_line)
                            + f" (an id? --id-column {name!r}; not a feature? --drop-columns "
                              f"{name!r})")
        features.append(column.to_numpy().astype(np.float64))
    X = np.column_stack(features)
    y = None
    if label_column is not None:
        y = _labels(table.column(label_column).to_numpy(zero_copy_only=False), label_column)
    return _checked(Dataset(X=X, y=y, feature_names=names, source=source,
                            label_column=label_column, id_column=choice.id,
                            dropped_columns=_dropped(columns, names, choice)), first_line)


def _dropped(all_names: list[str], features: list[str], choice: ColumnChoice) -> tuple[str, ...]:
    """The file's columns that are neither features nor the label or the id."""
    return tuple(n for n in all_names if n not in features and n not in (choice.label, choice.id))


def _first_non_number(values: list, first_line: int | None) -> str:
    for row, value in enumerate(values):
        try:
            float(value)
        except (TypeError, ValueError):
            return f"{_place(row, first_line)} holds {value!r}"
    return "its values are not numbers"


def _load_npz(path: Path, choice: ColumnChoice) -> Dataset:
    with np.load(path, allow_pickle=False) as archive:
        if "X" not in archive:
            raise DataError(f"{path.name} has no array 'X' (arrays: {sorted(archive.files)})")
        X = np.asarray(archive["X"], dtype=np.float64)
        label_key = choice.label or "y"
        y = _labels(archive[label_key], label_key) if label_key in archive else None
        if choice.label and label_key not in archive:
            raise DataError(f"{path.name} has no array {choice.label!r}")
        names = (
            [str(n) for n in archive["feature_names"]]
            if "feature_names" in archive
            else [f"x{i}" for i in range(X.shape[1] if X.ndim == 2 else 0)]
        )
    if X.ndim != 2:
        raise DataError(f"'X' must be 2-D, got shape {X.shape}")
    # The label and the id of an archive are arrays of their own, never columns of X.
    features = replace(choice, label=None).features(names, path.name)
    if choice.id is not None:
        raise DataError(f"{path.name}: an .npz archive has no id column; --id-column is for "
                        "CSV and Parquet")
    keep = [names.index(n) for n in features]
    return _checked(Dataset(X=X[:, keep], y=y, feature_names=features, source=path.name,
                            label_column=label_key if y is not None else None,
                            dropped_columns=_dropped(names, features, ColumnChoice())))


def _labels(values: np.ndarray, name: str) -> np.ndarray:
    try:
        labels = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DataError(f"label column {name!r} is not numeric") from exc
    if not np.isin(labels, (0.0, 1.0)).all():
        raise DataError(f"label column {name!r} must hold only 0 (normal) and 1 (anomaly)")
    return labels.astype(np.int64)


def _checked(data: Dataset, first_line: int | None = None) -> Dataset:
    source = data.source
    if data.X.shape[0] == 0:
        raise DataError(f"{source}: the data has no rows")
    if data.y is not None and data.y.shape[0] != data.X.shape[0]:
        raise DataError(f"{source}: {data.y.shape[0]} labels for {data.X.shape[0]} rows")
    bad = ~np.isfinite(data.X)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(
            f"{source}: non-finite value {float(data.X[row, col])!r} at "
            f"{_place(row, first_line)}, column {data.feature_names[col]!r} "
            f"({int(bad.sum())} in all)"
        )
    return data
