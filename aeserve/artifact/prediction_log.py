"""The prediction log: what the server answered, and the labels that came back for it.

A folder of Parquet files, written by the server (`AESERVE_PREDICTION_LOG=DIR`) and read by the
server's feedback route and by `aeserve evaluate --from-log DIR`; this module is the one place that
says what the files hold, so both sides read them the same way.

    predictions-<time>-<pid>-<n>.parquet   one row per scored row: id (the client's, or null),
                                           request_id, time, model, version, score, threshold,
                                           is_anomaly (the verdict the server answered) and,
                                           when the server logs them, the features
    feedback-<time>-<pid>-<n>.parquet      one row per label received: id, time, model, label

Each file is written whole under a temporary name and renamed into place, so a reader never sees a
half-written file. A label joins the newest prediction of its model with the same id logged before
the label arrived (`join_feedback`); its outcome compares the label with the verdict the server
gave, at the threshold that was in force for that answer.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
OUTCOMES = ("true_positive", "false_positive", "true_negative", "false_negative")

_sequence = itertools.count()


def pyarrow_modules() -> tuple[Any, Any]:
    """(pyarrow, pyarrow.parquet), or an ImportError that names the extra installing them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - every extra that logs installs pyarrow
        raise ImportError("the prediction log needs pyarrow (pip install 'aeserve[log]')"
                          ) from exc
    return pa, pq


def prediction_schema(features: bool) -> Any:
    """The columns of a predictions file; `features` (each row's inputs, in the card's feature
    order) only when the server logs them."""
    pa, _ = pyarrow_modules()
    fields = [pa.field("id", pa.string()), pa.field("request_id", pa.string()),
              pa.field("time", pa.timestamp("us", tz="UTC")), pa.field("model", pa.string()),
              pa.field("version", pa.int32()), pa.field("score", pa.float32()),
              pa.field("threshold", pa.float64()), pa.field("is_anomaly", pa.bool_())]
    if features:
        fields.append(pa.field("features", pa.list_(pa.float32())))
    return pa.schema(fields)


def feedback_schema() -> Any:
    pa, _ = pyarrow_modules()
    return pa.schema([pa.field("id", pa.string()), pa.field("time", pa.timestamp("us", tz="UTC")),
                      pa.field("model", pa.string()), pa.field("label", pa.int8())])


def write_table(directory: Path, kind: str, table: Any) -> Path:
    """Write `table` as a new `kind` file of `directory`, atomically; its path."""
    _, pq = pyarrow_modules()
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"{kind}-{stamp}-{os.getpid()}-{next(_sequence):06d}.parquet"
    partial = directory / f".{name}.partial"
    # dictionary pages for the text columns only: scores and times do not repeat, and trying
    # them costs a fifth of the write
    pq.write_table(table, partial, compression="zstd",
                   use_dictionary=[c for c in ("id", "request_id", "model")
                                   if c in table.column_names])
    final = directory / name
    os.replace(partial, final)
    return final


def log_files(directory: Path, kind: str) -> list[Path]:
    """`kind`'s files, oldest first (by modification time, then name)."""
    if not directory.is_dir():
        return []
    paths = [p for p in directory.glob(f"{kind}-*.parquet") if p.is_file()]
    return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.name))


def normalize_ids(ids: Iterable[Any]) -> list[str]:
    """Ids as the log stores them: strings (an integer id 7 is the string "7")."""
    return [value if isinstance(value, str) else str(value) for value in ids]


@dataclass(frozen=True)
class Prediction:
    """What the server answered for one logged row."""

    version: int
    score: float
    threshold: float
    is_anomaly: bool


def outcome(label: int, is_anomaly: bool) -> str:
    """A label against the verdict the server gave."""
    if is_anomaly:
        return "true_positive" if label else "false_positive"
    return "false_negative" if label else "true_negative"


_FIND_COLUMNS = ["id", "time", "model", "version", "score", "threshold", "is_anomaly"]


def find_predictions(directory: Path, model: str, ids: Sequence[str],
                     max_bytes: int | None = None) -> dict[str, Prediction]:
    """The newest logged prediction of `model` for each of `ids` that has one.

    Reads the newest files first and stops once every id is found and the next file was written
    before the oldest prediction found (a file holds nothing newer than its writing): labels
    are usually sent soon after their predictions, so a feedback call reads a few recent files,
    not the whole log. With `max_bytes`, it also stops before the files read would exceed that
    many bytes (always reading the newest one): an id never logged then costs a bounded read.
    """
    pa, pq = pyarrow_modules()
    import pyarrow.compute as pc

    wanted = set(ids)
    found: dict[str, tuple[int, Prediction]] = {}  # id -> (time in us, prediction)
    lookup = pa.array(sorted(wanted), type=pa.string())
    read = 0
    for path in reversed(log_files(directory, PREDICTIONS)):
        try:
            stat = path.stat()
            if len(found) == len(wanted) and (
                    stat.st_mtime_ns // 1000 < min(t for t, _ in found.values())):
                break
            if max_bytes is not None and read and read + stat.st_size > max_bytes:
                break
            read += stat.st_size
            table = pq.read_table(path, columns=_FIND_COLUMNS)
        except (OSError, ValueError):  # removed by rotation meanwhile, or unreadable
            continue
        table = table.filter(pc.and_(pc.equal(table["model"], model),
                                     pc.is_in(table["id"], value_set=lookup)))
        rows = table.to_pydict()
        times = table["time"].cast(pa.int64()).to_pylist()
        for i in range(table.num_rows):
            key = rows["id"][i]
            if key not in found or found[key][0] <= times[i]:
                found[key] = (times[i], Prediction(rows["version"][i], rows["score"][i],
                                                   rows["threshold"][i], rows["is_anomaly"][i]))
    return {key: prediction for key, (_, prediction) in found.items()}


@dataclass(frozen=True)
class JoinedLabels:
    """Labels joined to the predictions they are about (one entry per label received)."""

    model: list[str]
    version: np.ndarray
    score: np.ndarray
    threshold: np.ndarray
    is_anomaly: np.ndarray
    label: np.ndarray
    unmatched: dict[str, int]  # model -> labels with no logged prediction


def read_table(paths: Sequence[Path], columns: Sequence[str]) -> Any:
    """The rows of `paths` (those still readable) as one table of `columns`."""
    pa, pq = pyarrow_modules()
    tables = []
    for path in paths:
        try:
            tables.append(pq.read_table(path, columns=list(columns)))
        except (OSError, ValueError):
            continue
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def join_feedback(directory: Path, model: str | None = None) -> JoinedLabels:
    """Every label in the log joined to the newest prediction of its model and id logged before
    the label arrived, the rule the server's feedback route applies when it counts."""
    import pyarrow.compute as pc

    feedback = read_table(log_files(directory, FEEDBACK), ["id", "time", "model", "label"])
    empty = JoinedLabels([], np.zeros(0, np.int64), np.zeros(0), np.zeros(0),
                         np.zeros(0, bool), np.zeros(0, np.int8), {})
    if feedback is None:
        return empty
    if model is not None:
        feedback = feedback.filter(pc.equal(feedback["model"], model))
    predictions = read_table(log_files(directory, PREDICTIONS),
                             ["id", "time", "model", "version", "score", "threshold",
                              "is_anomaly"])
    if predictions is not None:
        predictions = predictions.filter(pc.is_in(predictions["id"],
                                                  value_set=pc.unique(feedback["id"])))
    history: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    if predictions is not None:
        rows = predictions.sort_by([("time", "ascending")]).to_pydict()
        for i in range(predictions.num_rows):
            history.setdefault((rows["model"][i], rows["id"][i]), []).append(
                (rows["time"][i], rows["version"][i], rows["score"][i], rows["threshold"][i],
                 rows["is_anomaly"][i]))
    labels = feedback.to_pydict()
    out: dict[str, list] = {"model": [], "version": [], "score": [], "threshold": [],
                            "is_anomaly": [], "label": []}
    unmatched: dict[str, int] = {}
    for key_model, key_id, when, label in zip(labels["model"], labels["id"], labels["time"],
                                              labels["label"], strict=True):
        match = None
        for entry in history.get((key_model, key_id), ()):
            if entry[0] > when:
                break
            match = entry
        if match is None:
            unmatched[key_model] = unmatched.get(key_model, 0) + 1
            continue
        out["model"].append(key_model)
        for column, value in zip(("version", "score", "threshold", "is_anomaly"), match[1:],
                                 strict=True):
            out[column].append(value)
        out["label"].append(label)
    return JoinedLabels(out["model"], np.asarray(out["version"], dtype=np.int64),
                        np.asarray(out["score"], dtype=np.float64),
                        np.asarray(out["threshold"], dtype=np.float64),
                        np.asarray(out["is_anomaly"], dtype=bool),
                        np.asarray(out["label"], dtype=np.int8), unmatched)
