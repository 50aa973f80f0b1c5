"""`aeserve score` with a windowed model: each reading scored by the window that ends at it.

Windows need a series' earlier readings, in time order, whatever order the file has them in: the
whole file's feature, series and time columns are read (the readings' memory, plus the windows
of one run at a time), ordered by series and time, cut into every window of the card's size
(aeserve/artifact/windows.py, as training and the stream state cut them), and scored
`RUN_WINDOWS` at a time. The output has one row per input row, in the file's order: the first
W - 1 readings of a series have no score (null) and are not anomalies. Per-feature errors (--top-k)
are summed over each window's steps, one per reading feature.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from aeserve.artifact.scores import verdicts
from aeserve.artifact.streams import runnable
from aeserve.artifact.windows import flatten, per_feature, series_order, window_rows
from aeserve.batch.files import Sink, file_kind, parquet_files
from aeserve.batch.local import Summary
from aeserve.batch.model import (
    LoadedModel,
    ScoringError,
    carried_columns,
    feature_matrix,
    result_columns,
)
from aeserve.batch.quantiles import Percentiles

#: Windows per onnxruntime run: memory holds one run's windows (W x d float32 each).
RUN_WINDOWS = 65_536


def read_table(path: Path, columns: list[str]) -> pa.Table:
    """The named columns of a CSV file, a Parquet file or a folder of them."""
    try:
        if not path.is_dir() and file_kind(path) == "csv":
            # an empty cell is missing, in a text column too (as training reads it)
            return pv.read_csv(path, convert_options=pv.ConvertOptions(
                include_columns=columns, strings_can_be_null=True))
        return pa.concat_tables(pq.read_table(f, columns=columns)
                                for f in parquet_files(path))
    except (pa.ArrowInvalid, KeyError) as exc:
        raise ScoringError(f"{path.name}: cannot read the columns {columns}: {exc}") from None


def score_windowed_file(loaded: LoadedModel, data: Path, out: Path, *, id_column: str | None,
                        keep_columns: Sequence[str], top_k: int) -> Summary:
    """Score every reading of `data` with the windowed model `loaded` into `out`."""
    started = time.perf_counter()
    entry, card = loaded.entry, loaded.card
    window = card.window
    keys = [c for c in (window.series_column, window.time_column) if c is not None]
    carried = carried_columns(id_column, keep_columns, top_k)
    if not 0 <= top_k <= len(window.features):
        raise ScoringError(f"--top-k must lie between 0 and the model's "
                           f"{len(window.features)} features, got {top_k}")
    needed = list(dict.fromkeys([*window.features, *keys, *carried]))
    table = read_table(data, needed)
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise ScoringError(f"{data.name} lacks columns {missing}")
    X = feature_matrix(table, window.features)
    for key in keys:
        if table.column(key).null_count:
            raise ScoringError(f"column {key!r} has {table.column(key).null_count} missing "
                               "values: a reading without its series or time has no window")
    series = table.column(window.series_column).to_numpy() if window.series_column else None
    times = table.column(window.time_column).to_numpy() if window.time_column else None
    try:
        rows = window_rows(*series_order(series, times, len(X)), window.size)
    except ValueError as exc:
        raise ScoringError(str(exc)) from None
    scores = np.full(len(X), np.nan, dtype=np.float32)
    errors = np.zeros((len(X), len(window.features)), dtype=np.float32) if top_k else None
    wanted = ("score", "feature_errors") if top_k else ("score",)
    for start in range(0, len(rows), RUN_WINDOWS):
        part = rows[start:start + RUN_WINDOWS]
        windows = flatten(X, part)
        out_part = entry.session.run(runnable(windows), wanted)
        scores[part[:, -1]] = out_part["score"][:len(part)]
        if errors is not None:
            errors[part[:, -1]] = per_feature(out_part["feature_errors"][:len(part)],
                                              window.size)
    # one row per reading, in the file's order: null results where no window ends
    columns = {out_name: table.column(name) for name, out_name in carried.items()}
    columns.update(result_columns(card, Percentiles(card.score_quantiles),
                                  pa.array(window.features, pa.string()), scores, errors,
                                  top_k, unscored=np.isnan(scores)))
    with Sink(out) as sink:
        sink.write(pa.table(columns))
    anomalies = int(verdicts(scores[~np.isnan(scores)], card.threshold).sum())
    return Summary(engine="windowed", model=entry.name, version=entry.version,
                   threshold=card.threshold, rows=len(X), anomalies=anomalies,
                   seconds=time.perf_counter() - started, out=out)
