"""Read a user's tabular data (CSV, Parquet, NPZ) into one float64 matrix.

Why float64: fitting preprocessing on float64 keeps means and deviations of large-valued features
exact; the network itself trains in float32.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """The data file cannot be used for training; the message says why."""


@dataclass(frozen=True)
class Dataset:
    """Features, optional 0/1 labels (1 = anomaly) and the feature names, in file order."""

    X: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]
    source: str

    def fingerprint(self) -> str:
        """sha256 of the feature values and names: identifies the data a model saw."""
        digest = hashlib.sha256()
        digest.update("\x1f".join(self.feature_names).encode())
        digest.update(np.ascontiguousarray(self.X, dtype=np.float64).tobytes())
        return digest.hexdigest()


def load_dataset(path: str | Path, label_column: str | None = None) -> Dataset:
    """Load CSV (header row), Parquet or NPZ (`X`, optional `y`) by file extension."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, label_column)
    if suffix in {".csv", ".parquet", ".pq"}:
        table = _read_table(path, suffix)
        return _from_columns(table, label_column, path.name)
    raise DataError(f"unsupported data format {suffix!r}: use .csv, .parquet or .npz")


def _read_table(path: Path, suffix: str) -> dict[str, np.ndarray]:
    if suffix == ".csv":
        import pyarrow.csv as pv

        try:
            table = pv.read_csv(path)
        except Exception as exc:  # pyarrow raises its own ArrowInvalid family
            raise DataError(f"cannot parse CSV {path.name}: {exc}") from exc
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    return {name: table.column(name) for name in table.column_names}


def _from_columns(columns: dict, label_column: str | None, source: str) -> Dataset:
    import pyarrow as pa

    if label_column is not None and label_column not in columns:
        raise DataError(f"label column {label_column!r} not in {sorted(columns)}")
    names = [name for name in columns if name != label_column]
    if not names:
        raise DataError("no feature columns")
    features = []
    for name in names:
        column = columns[name]
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type)):
            raise DataError(f"column {name!r} is not numeric (type {column.type})")
        if column.null_count:
            raise DataError(f"column {name!r} has {column.null_count} missing values")
        features.append(column.to_numpy().astype(np.float64))
    X = np.column_stack(features)
    y = None
    if label_column is not None:
        y = _labels(columns[label_column].to_numpy(zero_copy_only=False), label_column)
    return _checked(Dataset(X=X, y=y, feature_names=names, source=source))


def _load_npz(path: Path, label_column: str | None) -> Dataset:
    with np.load(path, allow_pickle=False) as archive:
        if "X" not in archive:
            raise DataError(f"{path.name} has no array 'X' (arrays: {sorted(archive.files)})")
        X = np.asarray(archive["X"], dtype=np.float64)
        label_key = label_column or "y"
        y = _labels(archive[label_key], label_key) if label_key in archive else None
        if label_column and label_key not in archive:
            raise DataError(f"{path.name} has no array {label_column!r}")
        names = (
            [str(n) for n in archive["feature_names"]]
            if "feature_names" in archive
            else [f"x{i}" for i in range(X.shape[1] if X.ndim == 2 else 0)]
        )
    if X.ndim != 2:
        raise DataError(f"'X' must be 2-D, got shape {X.shape}")
    return _checked(Dataset(X=X, y=y, feature_names=names, source=path.name))


def _labels(values: np.ndarray, name: str) -> np.ndarray:
    try:
        labels = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DataError(f"label column {name!r} is not numeric") from exc
    if not np.isin(labels, (0.0, 1.0)).all():
        raise DataError(f"label column {name!r} must hold only 0 (normal) and 1 (anomaly)")
    return labels.astype(np.int64)


def _checked(data: Dataset) -> Dataset:
    if data.X.shape[0] == 0:
        raise DataError("the data has no rows")
    if data.y is not None and data.y.shape[0] != data.X.shape[0]:
        raise DataError(f"{data.y.shape[0]} labels for {data.X.shape[0]} rows")
    bad = ~np.isfinite(data.X)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(
            f"non-finite value in row {row}, column {data.feature_names[col]!r}"
            f" ({int(bad.sum())} in all)"
        )
    return data
