"""Read a user's tabular data (CSV, Parquet, NPZ) into one float32 matrix.

Why float32: it is what the network trains on and what the exported graph reads, and it halves
what training holds: the data once, at four bytes a value. Values are checked as read, one column
at a time, so a non-finite value or one beyond float32's range is reported with its row and
column. Statistics over the rows (the scaler's mean and spread, training/preprocessing.py) are
still accumulated in float64.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aeserve.artifact.card import Window
from aeserve.training import spill as spill_file

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
    #: The Parquet files the rows came from, in order (`--engine ray` reads them again).
    files: tuple[Path, ...] = ()
    #: Windowed data (training/windowing.py): each row is a window of consecutive readings.
    window: Window | None = None

    def fingerprint(self) -> str:
        """sha256 of the feature names and float32 values: identifies the data a model saw."""
        digest = hashlib.sha256()
        digest.update("\x1f".join(self.feature_names).encode())
        for start in range(0, len(self.X), _FINGERPRINT_ROWS):
            digest.update(np.ascontiguousarray(self.X[start:start + _FINGERPRINT_ROWS],
                                               dtype=np.float32).data)
        return digest.hexdigest()


#: Rows hashed at a time by `Dataset.fingerprint`.
_FINGERPRINT_ROWS = 65_536
#: The largest finite float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


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
                 choice: ColumnChoice | None = None, spill: str = "never",
                 spill_dir: Path | None = None) -> Dataset:
    """Load CSV (header row), Parquet (a file, a folder of .parquet files or a glob such as
    `data/*.parquet`, read in sorted order) or NPZ (`X`, optional `y`) by file extension;
    `choice` picks the feature columns (its label, if any, wins over `label_column`).

    Parquet can be spilled (training/spill.py): with `spill` "always", or "auto" when the float32
    data would exceed half the machine's memory, the matrix is a read-only map of a file written
    into `spill_dir`, which must outlive the Dataset.

    Raises DataError naming the file and, for a bad value, its row, column and the value."""
    path = Path(path)
    parquet_files = _parquet_files(path)
    if parquet_files is None and not path.is_file():
        raise DataError(f"data file not found: {path}")
    choice = choice or ColumnChoice(label=label_column)
    if choice.label is None and label_column is not None:
        choice = replace(choice, label=label_column)
    if parquet_files is not None:
        return replace(_from_table(_read_parquet(parquet_files), choice, path.name, spill=spill,
                                   spill_dir=spill_dir), files=tuple(parquet_files))
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, choice)
    if suffix == ".csv":
        if spill_file.should_spill(spill, path.stat().st_size):
            return _from_table(_stream_csv(path, na_values, delimiter), choice, path.name,
                               first_line=2, spill="always", spill_dir=spill_dir)
        return _from_table(_read_csv(path, na_values, delimiter), choice, path.name,
                           first_line=2)
    raise DataError(f"unsupported data format {suffix!r}: use .csv, .parquet or .npz")


def read_key_columns(path: str | Path, columns: list[str], na_values: Sequence[str] = NA_VALUES,
                     delimiter: str | None = None) -> dict[str, np.ndarray]:
    """Columns that are not features but order the rows (a windowed model's series and time),
    as they are: numbers, text or timestamps. A missing value is refused with its place, since
    a row without its series or time has no place in a window."""
    path = Path(path)
    parquet_files = _parquet_files(path)
    if parquet_files is None and path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            missing = [c for c in columns if c not in archive]
            if missing:
                raise DataError(f"{path.name} has no array {missing[0]!r} (arrays: "
                                f"{sorted(archive.files)})")
            return {c: np.asarray(archive[c]).ravel() for c in columns}
    if parquet_files is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(f, columns=columns) for f in parquet_files]
        table = pa.concat_tables(tables)
        first_line = None
    else:
        table, first_line = _read_csv(path, na_values, delimiter, columns), 2
    keys = {}
    for name in columns:
        column = table.column(name)
        if column.null_count:
            row = next(i for i, v in enumerate(column.to_pylist()) if v is None)
            raise DataError(f"{path.name}: column {name!r} has {column.null_count} missing "
                            f"values, the first at {_place(row, first_line)}")
        keys[name] = column.to_numpy()
    return keys


def _parquet_files(path: Path) -> list[Path] | None:
    """The Parquet files `path` names (a .parquet file, a folder of them, a glob), sorted; None
    when it names something else."""
    if any(char in str(path) for char in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path)))
        if not files:
            raise DataError(f"no file matches {path}")
    elif path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise DataError(f"no .parquet file in the folder {path}")
    elif path.suffix.lower() in (".parquet", ".pq"):
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        return [path]
    else:
        return None
    others = [f.name for f in files if f.suffix.lower() not in (".parquet", ".pq")]
    if others:
        raise DataError(f"{path}: only Parquet files can be read together, not {others[:3]}")
    return files


def sniff_delimiter(path: Path) -> str:
    """The delimiter of a CSV file's first lines among `DELIMITERS` (a comma when unsure)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        sample = handle.read(_SNIFF_BYTES)
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def _read_csv(path: Path, na_values: Sequence[str], delimiter: str | None,
              columns: list[str] | None = None) -> pa.Table:
    """The whole CSV file, or its `columns` only."""
    import pyarrow.csv as pv

    try:
        table = pv.read_csv(
            path, parse_options=pv.ParseOptions(delimiter=delimiter or sniff_delimiter(path)),
            convert_options=pv.ConvertOptions(null_values=list(na_values),
                                              strings_can_be_null=True,
                                              include_columns=columns or []))
    except Exception as exc:  # pyarrow raises its own ArrowInvalid family
        raise DataError(f"cannot parse CSV {path.name}: {exc}") from exc
    return table


#: Bytes of CSV text parsed at a time when a CSV file is spilled.
CSV_BLOCK_BYTES = 8 << 20


def _stream_csv(path: Path, na_values: Sequence[str], delimiter: str | None) -> Batches:
    """A CSV file parsed a block at a time (for spilling: its rows are never all in memory).

    Column types are inferred from the first block; a later value that does not fit them is
    found again (`_locate_non_number`) and reported with its line, as the whole-file parser
    reports it."""
    import pyarrow as pa
    import pyarrow.csv as pv

    parse = pv.ParseOptions(delimiter=delimiter or sniff_delimiter(path))

    def reader(columns: list[str] | None = None):
        return pv.open_csv(path, read_options=pv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                           parse_options=parse, convert_options=pv.ConvertOptions(
                               null_values=list(na_values), strings_can_be_null=True,
                               include_columns=columns or []))

    try:
        names = reader().schema.names
    except Exception as exc:
        raise DataError(f"cannot parse CSV {path.name}: {exc}") from exc

    def batches(columns: list[str]):
        done = 0  # rows of the blocks already read
        try:
            for batch in reader(columns):
                yield batch
                done += batch.num_rows
        except Exception as exc:
            where = _locate_non_number(done, columns) if isinstance(exc, pa.ArrowInvalid) else None
            raise DataError(f"{path.name}: {where}" if where
                            else f"cannot parse CSV {path.name}: {exc}") from exc

    def _locate_non_number(done: int, columns: list[str]) -> str | None:
        """The first value of the failing block, which starts `done` rows after the header,
        that is not a number: the block again, its columns read as text (an error path: one
        block parsed twice)."""
        try:
            block = next(iter(pv.open_csv(
                path, read_options=pv.ReadOptions(block_size=CSV_BLOCK_BYTES,
                                                  skip_rows_after_names=done),
                parse_options=parse, convert_options=pv.ConvertOptions(
                    null_values=list(na_values), strings_can_be_null=True,
                    include_columns=columns,
                    column_types={name: pa.string() for name in columns}))))
        except Exception:
            return None
        found = []
        for j, name in enumerate(columns):
            for row, value in enumerate(block.column(j).to_pylist()):
                try:
                    float(value if value is not None else 0.0)
                except ValueError:
                    found.append((row, name, value))
                    break
        if not found:
            return None
        row, name, value = min(found)
        return (f"column {name!r} is not numeric: {_place(done + row, 2)} holds {value!r} "
                f"(the rows above it held numbers only)")

    return Batches(names=names, num_rows=None, read=batches)


#: Rows per batch of a Parquet row group: loading holds the float32 matrix plus one row group in
#: Arrow.
PARQUET_BATCH_ROWS = 65_536


def _read_parquet(paths: list[Path]) -> Batches:
    """The files' rows a batch at a time, file after file (row groups are never all in memory
    at once). Every file must have the first one's columns."""
    import pyarrow.parquet as pq

    files = []
    for path in paths:
        try:
            files.append((path, pq.ParquetFile(path)))
        except Exception as exc:
            raise DataError(f"cannot read Parquet {path.name}: {exc}") from exc
    names = files[0][1].schema_arrow.names
    for path, parquet in files[1:]:
        if set(parquet.schema_arrow.names) != set(names):
            raise DataError(f"{path.name} has the columns {parquet.schema_arrow.names}, "
                            f"{files[0][0].name} has {names}: files read together must agree")

    def batches(columns: list[str]):
        import pyarrow as pa

        # One row group at a time, its memory handed back before the next: Arrow's reader and
        # allocator otherwise keep what they have decoded until the whole file is read.
        for path, parquet in files:
            for group in range(parquet.num_row_groups):
                try:
                    table = parquet.read_row_group(group, columns=columns)
                except Exception as exc:
                    raise DataError(f"cannot read Parquet {path.name}: {exc}") from exc
                yield from table.to_batches(max_chunksize=PARQUET_BATCH_ROWS)
                del table
                pa.default_memory_pool().release_unused()

    return Batches(names=names, num_rows=sum(p.metadata.num_rows for _, p in files),
                   read=batches)


@dataclass(frozen=True)
class Batches:
    """A table read a record batch at a time: its column names, its rows, and `read(columns)`,
    which yields the batches of those columns in row order."""

    names: list[str]
    #: None where it is not known before reading (a streamed CSV file).
    num_rows: int | None
    read: Any

    @classmethod
    def of_table(cls, table: pa.Table) -> Batches:
        return cls(names=table.column_names, num_rows=table.num_rows,
                   read=lambda columns: table.select(columns).to_batches())


def _place(row: int, first_line: int | None) -> str:
    """Where a data row is, for a person: its line in a CSV file, its number otherwise."""
    return f"line {row + first_line}" if first_line is not None else f"row {row + 1}"


def _from_table(table: pa.Table | Batches, choice: ColumnChoice, source: str,
                first_line: int | None = None, spill: str = "never",
                spill_dir: Path | None = None) -> Dataset:
    """The Dataset of a table, filled a record batch at a time into one float32 matrix (in
    memory, or spilled to a file in `spill_dir`: training/spill.py)."""
    import pyarrow as pa

    batches = table if isinstance(table, Batches) else Batches.of_table(table)
    columns = batches.names
    label_column = choice.label
    if label_column is not None and label_column not in columns:
        raise DataError(f"{source}: label column {label_column!r} not in {sorted(columns)}")
    names = choice.features(columns, source)
    if not names:
        raise DataError(f"{source}: no feature columns")
    spilled = batches.num_rows is None or spill_file.should_spill(
        spill, batches.num_rows * len(names) * 4)
    if spilled and spill_dir is None:
        raise ValueError("spilling the data needs a folder for it (spill_dir)")
    appender = spill_file.Appender(spill_dir, len(names)) if spilled else None
    X = None if spilled else np.empty((batches.num_rows, len(names)), dtype=np.float32)
    labels = [] if label_column is not None else None
    offset = 0
    for batch in batches.read(names + ([label_column] if label_column is not None else [])):
        n = batch.num_rows
        block = np.empty((n, len(names)), dtype=np.float32)
        for j, name in enumerate(names):
            column = batch.column(j)
            if column.null_count:
                row = offset + next(i for i, v in enumerate(column.to_pylist()) if v is None)
                missing = sum(part.column(0).null_count for part in batches.read([name]))
                raise DataError(f"{source}: column {name!r} has {missing} missing values, the "
                                f"first at {_place(row, first_line)}")
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                    or pa.types.is_boolean(column.type)):
                raise DataError(f"{source}: column {name!r} is not numeric: "
                                + _first_non_number(column.to_pylist(), first_line, offset)
                                + f" (an id? --id-column {name!r}; not a feature? "
                                  f"--drop-columns {name!r})")
            values = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            block[:, j] = _as_float32(values, name, source, first_line, offset)
        if appender is not None:
            appender.write(block)
        else:
            X[offset:offset + n] = block
        if labels is not None:
            labels.append(batch.column(len(names)).to_numpy(zero_copy_only=False))
        offset += n
    pa.default_memory_pool().release_unused()  # what Arrow kept of the last batches
    if appender is not None:
        X = appender.matrix()
    if offset == 0:
        raise DataError(f"{source}: the data has no rows (a header alone?)")
    y = None
    if labels is not None:
        y = _labels(np.concatenate(labels) if labels else np.empty(0), label_column)
    return _checked(Dataset(X=X, y=y, feature_names=names, source=source,
                            label_column=label_column, id_column=choice.id,
                            dropped_columns=_dropped(columns, names, choice)), first_line)


def _dropped(all_names: list[str], features: list[str], choice: ColumnChoice) -> tuple[str, ...]:
    """The file's columns that are neither features nor the label or the id."""
    return tuple(n for n in all_names if n not in features and n not in (choice.label, choice.id))


def _first_non_number(values: list, first_line: int | None, offset: int = 0) -> str:
    for row, value in enumerate(values):
        try:
            float(value)
        except (TypeError, ValueError):
            return f"{_place(offset + row, first_line)} holds {value!r}"
    return "its values are not numbers"


def _load_npz(path: Path, choice: ColumnChoice) -> Dataset:
    with np.load(path, allow_pickle=False) as archive:
        if "X" not in archive:
            raise DataError(f"{path.name} has no array 'X' (arrays: {sorted(archive.files)})")
        X = np.asarray(archive["X"])
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
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise DataError(f"{path.name}: 'X' is not numeric (dtype {X.dtype})")
    keep = [names.index(n) for n in features]
    X32 = np.empty((X.shape[0], len(keep)), dtype=np.float32)
    for j, column in enumerate(keep):
        X32[:, j] = _as_float32(X[:, column].astype(np.float64, copy=False), features[j],
                                path.name, None)
    del X
    return _checked(Dataset(X=X32, y=y, feature_names=features, source=path.name,
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


def _as_float32(values: np.ndarray, name: str, source: str,
                first_line: int | None, offset: int = 0) -> np.ndarray:
    """One column's values as float32, refused with the first bad one's place when a value is
    not finite or would not be finite in float32 (beyond about 3.4e38)."""
    bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
    if bad.any():
        rows = np.flatnonzero(bad)
        value = float(values[rows[0]])
        what = ("non-finite value" if not np.isfinite(value)
                else "value beyond float32's range (about 3.4e38)")
        raise DataError(f"{source}: {what} {value!r} at "
                        f"{_place(offset + int(rows[0]), first_line)}, column {name!r}")
    return values.astype(np.float32)


def _checked(data: Dataset, first_line: int | None = None) -> Dataset:
    source = data.source
    if data.X.shape[0] == 0:
        raise DataError(f"{source}: the data has no rows")
    if data.y is not None and data.y.shape[0] != data.X.shape[0]:
        raise DataError(f"{source}: {data.y.shape[0]} labels for {data.X.shape[0]} rows")
    return data
