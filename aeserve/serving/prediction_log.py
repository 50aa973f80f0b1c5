"""The prediction log's writer and the feedback route's join (AESERVE_PREDICTION_LOG=DIR).

Requests never wait on disk: `record` appends what a scoring answer said to a list under a lock
(constant time), and a writer thread turns what has accumulated into one Parquet file every
`flush_s` seconds, or sooner when `file_rows` rows wait. Memory and disk stay bounded: beyond
`max_pending_rows` waiting rows, or `max_pending_bytes` of memory they hold (their ids and
logged features included), a request's rows are not logged (counted in
`aeserve_prediction_log_dropped_rows_total`, reason `queue_full`), and after each write the oldest
prediction files go until they hold at most `max_bytes`. Feedback files (the labels) have a budget
of their own, `max_label_bytes`, so that labels never push predictions out (nor predictions
labels): after each feedback write the oldest label files beyond it go. A feedback call reads at
most `search_bytes` of the newest prediction files to find its ids: a label for an id logged
long ago, or never, costs a bounded read (it is stored all the same, for `evaluate --from-log`).

Feedback (`POST /models/{name}/feedback`) first writes this worker's waiting rows, then joins the
labels to the newest logged prediction of each id (aeserve/artifact/prediction_log.py), stores the
labels, and counts each one's outcome (the label against the verdict the server gave) in
`aeserve_feedback_labels_total`; `aeserve evaluate --from-log` applies the same join to the files.
The file format lives in the artifact, shared by both sides.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aeserve.artifact import prediction_log as log_format
from aeserve.serving.metrics import Metrics

log = logging.getLogger("aeserve.prediction_log")


@dataclass(frozen=True)
class PredictionLogSettings:
    directory: Path
    features: bool = False
    max_bytes: int = 1 << 30
    flush_s: float = 5.0
    max_label_bytes: int = 1 << 27
    search_bytes: int = 1 << 28
    file_rows: int = 262_144
    max_pending_rows: int = 1_000_000
    max_pending_bytes: int = 1 << 28


@dataclass
class _Record:
    """One answer's rows, as the request handed them over (converted by the writer)."""

    time_us: int
    model: str
    version: int
    request_id: str | None
    ids: list[str] | None
    scores: np.ndarray
    threshold: float
    flagged: np.ndarray
    features: np.ndarray | None


@dataclass(frozen=True)
class FeedbackResult:
    """What one feedback call joined and counted."""

    received: int
    matched: int
    unmatched_ids: list[str]
    outcomes: dict[str, int] = field(default_factory=dict)


class PredictionLog:
    """Appends scored rows to rotated Parquet files off the request path; joins feedback."""

    def __init__(self, settings: PredictionLogSettings, metrics: Metrics) -> None:
        log_format.pyarrow_modules()  # fail at start-up, not on the first request
        self.settings = settings
        self.metrics = metrics
        self._pending: list[_Record] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._lock = threading.Lock()  # guards the pending list
        self._write_lock = threading.Lock()  # one write at a time: the thread's or a flush
        self._wake = threading.Event()
        self._closed = False
        settings.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="aeserve-prediction-log",
                                        daemon=True)
        self._thread.start()

    def record(self, model: str, version: int, ids: list[str] | None, request_id: str | None,
               scores: np.ndarray, threshold: float, flagged: np.ndarray,
               features: np.ndarray | None) -> None:
        """Queue one answer's rows (constant time on the request path)."""
        rows = len(scores)
        entry = _Record(time.time_ns() // 1000, model, version, request_id, ids, scores,
                        threshold, flagged, features if self.settings.features else None)
        size = _held_bytes(entry)
        with self._lock:
            if (self._pending_rows + rows > self.settings.max_pending_rows
                    or self._pending_bytes + size > self.settings.max_pending_bytes):
                full = True
            else:
                full = False
                self._pending.append(entry)
                self._pending_rows += rows
                self._pending_bytes += size
                wake = self._pending_rows >= min(self.settings.file_rows,
                                                 self.settings.max_pending_rows // 2)
        if full:
            self.metrics.prediction_log_dropped(rows, "queue_full")
        elif wake:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.settings.flush_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write every waiting row now (the writer thread, a feedback call, shutdown)."""
        with self._write_lock:
            with self._lock:
                pending, self._pending, self._pending_rows = self._pending, [], 0
                self._pending_bytes = 0
            if not pending:
                return
            try:
                table = self._table(pending)
            except Exception:  # one record the log cannot hold must not cost the others theirs
                table, pending = self._writable(pending)
                if table is None:
                    return
            rows = sum(len(r.scores) for r in pending)
            try:
                log_format.write_table(self.settings.directory, log_format.PREDICTIONS, table)
            except Exception:  # a full or read-only disk: count it, never fail a request
                log.exception("could not write %d rows to the prediction log", rows)
                self.metrics.prediction_log_dropped(rows, "write_failed")
                return
            self.metrics.prediction_log_written(rows)
            self._rotate()

    def _writable(self, pending: list[_Record]) -> tuple[Any, list[_Record]]:
        """The table of the records that make one on their own, and those records; each of the
        others is dropped, counted and logged."""
        kept = []
        for entry in pending:
            try:
                self._table([entry])
            except Exception:
                log.exception("dropped %d rows the prediction log cannot hold (request %s)",
                              len(entry.scores), entry.request_id)
                self.metrics.prediction_log_dropped(len(entry.scores), "unwritable")
            else:
                kept.append(entry)
        return (self._table(kept) if kept else None), kept

    def _table(self, pending: list[_Record]) -> Any:
        """One Arrow table of the waiting records, built column by column in C (a Python object
        per row only for ids the clients sent): a million rows in tens of milliseconds."""
        pa, _ = log_format.pyarrow_modules()
        counts = np.array([len(r.scores) for r in pending])
        record_of_row = pa.array(np.repeat(np.arange(len(pending), dtype=np.int32), counts))

        def repeated_text(values: list[str | None]) -> Any:  # one value per record, per row
            return pa.DictionaryArray.from_arrays(
                record_of_row, pa.array(values, type=pa.string())).cast(pa.string())

        if any(r.ids is not None for r in pending):
            ids: list[str | None] = []
            for r in pending:
                ids.extend(r.ids if r.ids is not None else [None] * len(r.scores))
            id_column = pa.array(ids, type=pa.string())
        else:
            id_column = pa.nulls(int(counts.sum()), type=pa.string())
        columns = {
            "id": id_column,
            "request_id": repeated_text([r.request_id for r in pending]),
            "time": pa.array(np.repeat(np.array([r.time_us for r in pending]), counts),
                             type=pa.timestamp("us", tz="UTC")),
            "model": repeated_text([r.model for r in pending]),
            "version": pa.array(np.repeat(np.array([r.version for r in pending], np.int32),
                                          counts)),
            "score": pa.array(np.concatenate([r.scores for r in pending]).astype(np.float32,
                                                                                  copy=False)),
            "threshold": pa.array(np.repeat(np.array([r.threshold for r in pending],
                                                     np.float64), counts)),
            "is_anomaly": pa.array(np.concatenate([r.flagged for r in pending]).astype(bool)),
        }
        if self.settings.features:
            values = np.concatenate([r.features.ravel() for r in pending]).astype(np.float32)
            widths = np.repeat([r.features.shape[1] for r in pending], counts)
            offsets = np.concatenate([[0], np.cumsum(widths)]).astype(np.int32)
            columns["features"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
        return pa.table(columns, schema=log_format.prediction_schema(self.settings.features))

    def _rotate(self) -> None:
        """Remove the oldest prediction files until they hold at most `max_bytes`."""
        self._trim(log_format.PREDICTIONS, self.settings.max_bytes)

    def _trim(self, kind: str, budget: int) -> None:
        """Remove `kind`'s oldest files until they hold at most `budget` bytes, never the newest
        (the file just written)."""
        try:
            files = log_format.log_files(self.settings.directory, kind)
        except OSError:  # a file another worker removed meanwhile: trim at the next write
            return
        sizes = [_size(path) for path in files]
        total = sum(sizes)
        for path, size in zip(files[:-1], sizes, strict=False):
            if total <= budget:
                break
            try:
                path.unlink()
            except OSError:
                continue
            total -= size
            if kind == log_format.PREDICTIONS:
                self.metrics.prediction_log_rotated()

    def feedback(self, model: str, ids: list[str], labels: list[int]) -> FeedbackResult:
        """Join `labels` to the logged predictions of `ids`, store them, count their outcomes.

        Blocking (file reads and a write): the route runs it in a thread. The labels are stored
        whether or not their predictions were found, so `evaluate --from-log` can still join
        the ones another worker had not yet written.
        """
        self.flush()
        found = log_format.find_predictions(self.settings.directory, model, ids,
                                            max_bytes=self.settings.search_bytes)
        pa, _ = log_format.pyarrow_modules()
        now = time.time_ns() // 1000
        table = pa.table({"id": pa.array(ids, type=pa.string()),
                          "time": pa.array([now] * len(ids), type=pa.timestamp("us", tz="UTC")),
                          "model": pa.array([model] * len(ids), type=pa.string()),
                          "label": pa.array(labels, type=pa.int8())},
                         schema=log_format.feedback_schema())
        log_format.write_table(self.settings.directory, log_format.FEEDBACK, table)
        self._trim(log_format.FEEDBACK, self.settings.max_label_bytes)
        outcomes: dict[str, int] = {}
        by_version: dict[tuple[int, str], int] = {}
        unmatched = []
        for key, label in zip(ids, labels, strict=True):
            prediction = found.get(key)
            if prediction is None:
                unmatched.append(key)
                continue
            kind = log_format.outcome(label, prediction.is_anomaly)
            outcomes[kind] = outcomes.get(kind, 0) + 1
            by_version[prediction.version, kind] = by_version.get((prediction.version, kind),
                                                                  0) + 1
        self.metrics.feedback_counted(model, by_version)
        if unmatched:
            self.metrics.feedback_unmatched_labels(model, len(unmatched))
        return FeedbackResult(len(ids), len(ids) - len(unmatched), unmatched, outcomes)

    def close(self) -> None:
        """Stop the writer thread and write what still waits."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()


#: What CPython holds for one short str beyond its characters (object header, hash, length).
STR_OVERHEAD_BYTES = 49


def _held_bytes(entry: _Record) -> int:
    """About how much memory a waiting record holds: its arrays, and its ids as Python strings
    (the bound that long ids and logged features would otherwise escape)."""
    size = entry.scores.nbytes + entry.flagged.nbytes
    if entry.features is not None:
        size += entry.features.nbytes
    if entry.ids is not None:
        size += STR_OVERHEAD_BYTES * len(entry.ids) + sum(map(len, entry.ids))
    return size


def _size(path: Path) -> int:
    """A file's size, 0 once another worker's rotation removed it."""
    try:
        return path.stat().st_size
    except OSError:
        return 0
