"""The Ray engine: the local engine's scoring on Ray Data, for Parquet too large for one machine.

The driver reads only the Parquet footers and makes one work item per row group: its file, its
number and the position of its first row in the whole input. `map_batches` hands the items to a
pool of actors (one per CPU by default), each holding one single-threaded onnxruntime session and
one `BatchScorer`, the local engine's scorer; an actor reads its row group's columns and scores
them in slices of `batch_rows`. Since every slice knows its position in the input, each row is
scored exactly as the local engine scores it (see `BatchScorer.score`): both engines write the
same values. The actors get the model's two files as bytes and load them with the server's
`load_version` (card, sha256, graph, test inference), so no worker needs the driver's copy of the
model; the data files must be readable at the same path from every node. The items' order is kept
(`preserve_order`), so a single output file lists the rows as the input does.

Output: a `.parquet` or `.csv` file is written by the driver as the scored blocks stream back; a
path without a suffix is a folder of Parquet files written by the workers themselves (Ray's
`write_parquet`), for results too large to pass through one process.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aeserve.artifact.card import CARD_FILENAME, ONNX_FILENAME
from aeserve.artifact.errors import ModelLoadError
from aeserve.artifact.store import load_version
from aeserve.batch.files import ParquetSource, Sink
from aeserve.batch.local import Progress, Summary, count_anomalies
from aeserve.batch.model import BATCH_SESSION, BatchScorer, LoadedModel, ScoringError


class ActorScorer:
    """One Ray actor: a model version loaded from bytes, scoring one batch per call."""

    def __init__(self, model_files: dict[str, bytes], name: str, version: int, top_k: int,
                 id_column: str | None, batch_rows: int,
                 keep_columns: tuple[str, ...] = ()) -> None:
        folder = Path(tempfile.mkdtemp(prefix="aeserve-score-"))
        try:
            path = folder / name / str(version)
            path.mkdir(parents=True)
            for filename, content in model_files.items():
                (path / filename).write_bytes(content)
            entry = load_version(name, version, path, BATCH_SESSION)
        except ModelLoadError as exc:
            raise ScoringError(f"model {name} version {version} cannot load on a Ray worker: "
                               f"{exc}") from None
        finally:  # the session holds the graph in memory; the files are no longer needed
            shutil.rmtree(folder, ignore_errors=True)
        self.scorer = BatchScorer(entry.card, entry.session, top_k=top_k, id_column=id_column,
                                  keep_columns=keep_columns)
        self.batch_rows = batch_rows

    def __call__(self, items: pa.Table) -> pa.Table:
        """Score the row groups named by `items` (path, row_group, first_row)."""
        tables = []
        for item in items.to_pylist():
            with pq.ParquetFile(item["path"]) as parquet:
                group = parquet.read_row_group(item["row_group"],
                                               columns=self.scorer.input_columns)
            first_row = item["first_row"]
            for offset in range(0, max(group.num_rows, 1), self.batch_rows):
                tables.append(self.scorer.score(group.slice(offset, self.batch_rows),
                                                first_row + offset))
        return pa.concat_tables(tables)


def row_groups(files: list[Path]) -> list[dict]:
    """One work item per row group, with the position of its first row in the whole input."""
    items, first_row = [], 0
    for path in files:
        metadata = pq.read_metadata(path)
        for group in range(metadata.num_row_groups):
            items.append({"path": str(path.resolve()), "row_group": group,
                          "first_row": first_row})
            first_row += metadata.row_group(group).num_rows
    return items


def score_with_ray(loaded: LoadedModel, data: Path, out: Path, *, top_k: int = 0,
                   id_column: str | None = None, keep_columns: Sequence[str] = (),
                   batch_rows: int = 65536,
                   actors: int | None = None, address: str | None = None,
                   num_cpus: int | None = None, progress: bool = True) -> Summary:
    """Score Parquet `data` (a file or a folder) on Ray into `out` (a file or a folder).

    Joins the running Ray (`ray.init` already called), else `address` / `RAY_ADDRESS`, else
    starts a local Ray with `num_cpus` CPUs, and shuts down only a Ray it started.
    """
    import ray

    entry = loaded.entry
    scorer = BatchScorer(entry.card, entry.session, top_k=top_k, id_column=id_column,
                         keep_columns=keep_columns)
    if not data.is_dir() and data.suffix.lower() == ".csv":
        raise ScoringError("--engine ray reads Parquet files or folders; score a CSV file with "
                           "--engine local")
    source = ParquetSource(data, scorer.input_columns, batch_rows)  # checks the columns
    items = row_groups(source.files)
    if source.total == 0:
        raise ScoringError(f"{data} holds no rows")
    to_folder = out.suffix == ""
    if to_folder and out.exists() and any(out.iterdir()):
        raise ScoringError(f"output folder {out} is not empty")
    sink = None if to_folder else Sink(out)

    started_here = not ray.is_initialized()
    if started_here:
        joining = address is not None or "RAY_ADDRESS" in os.environ
        ray.init(address=address, num_cpus=None if joining else num_cpus,
                 include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    started = time.perf_counter()
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = progress and to_folder
        cpus = int(ray.cluster_resources().get("CPU", 1))
        pool = actors or max(1, cpus)
        model_files = {name: (entry.path / name).read_bytes()
                       for name in (CARD_FILENAME, ONNX_FILENAME)}
        scored = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ActorScorer,
            fn_constructor_kwargs={"model_files": model_files, "name": entry.name,
                                   "version": entry.version, "top_k": top_k,
                                   "id_column": id_column, "batch_rows": batch_rows,
                                   "keep_columns": tuple(keep_columns)},
            batch_format="pyarrow", batch_size=1,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool), num_cpus=1)
        if to_folder:
            scored.write_parquet(str(out))
            rows, anomalies = _count_folder(out)
        else:
            rows, anomalies = _stream_to(sink, scored, source.total, progress)
    finally:
        if started_here:
            ray.shutdown()
    return Summary("ray", entry.name, entry.version, entry.card.threshold, rows, anomalies,
                   time.perf_counter() - started, out)


def _stream_to(sink: Sink, scored, total: int, progress: bool) -> tuple[int, int]:
    counter = _Counter(total)
    rows = anomalies = 0
    with closing(Progress(counter, progress)) as bar, sink:
        for table in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            if table.num_rows == 0:
                continue
            sink.write(table)
            rows += table.num_rows
            anomalies += count_anomalies(table)
            counter.rows = rows
            bar.update(rows, anomalies)
    return rows, anomalies


class _Counter:
    """What `Progress` needs of a source, for rows that stream back from Ray."""

    unit = "rows"

    def __init__(self, total: int) -> None:
        self.total = total
        self.rows = 0

    def position(self) -> int:
        return self.rows


def _count_folder(folder: Path) -> tuple[int, int]:
    flags = pq.read_table(str(folder), columns=["is_anomaly"]).column("is_anomaly")
    return len(flags), int(pc.sum(flags).as_py() or 0)
