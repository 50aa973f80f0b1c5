"""The local engine: read batches, score them, write them, in one process with bounded memory.

Reading (pyarrow), scoring (onnxruntime, numpy) and writing (pyarrow) release the GIL, so they
overlap: a reader thread feeds batches to `workers` scoring threads that share the one onnxruntime
session (one thread per run: batches in parallel use the cores better than threads inside one run
of a small graph), and a writer thread writes their results in input order. The queues between
the stages are short, so at most about `2 * workers + 2 * QUEUE_BATCHES` batches are alive at
once, whatever the file size.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from aeserve.batch.files import Sink, Source
from aeserve.batch.model import BatchScorer

QUEUE_BATCHES = 2
_DONE = object()


@dataclass
class Summary:
    """What a job did: the numbers `aeserve score` prints when it ends."""

    engine: str
    model: str
    version: int
    threshold: float
    rows: int
    anomalies: int
    seconds: float
    out: Path

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def lines(self) -> list[str]:
        share = 100.0 * self.anomalies / self.rows if self.rows else 0.0
        return [
            f"scored {self.rows:,} rows in {self.seconds:.2f} s ({self.rows_per_s:,.0f} rows/s) "
            f"with {self.model} version {self.version} ({self.engine} engine)",
            f"anomalies: {self.anomalies:,} ({share:.2f} %) above threshold {self.threshold:.6g}",
            f"results written to {self.out}",
        ]


class Progress:
    """A tqdm bar over the source's units (rows, or bytes of CSV) with rows and anomalies."""

    def __init__(self, source: Source, enabled: bool) -> None:
        self.source = source
        self.bar = tqdm(total=source.total, unit=source.unit, unit_scale=True,
                        disable=not enabled, desc="scoring", dynamic_ncols=True)

    def update(self, rows: int, anomalies: int) -> None:
        self.bar.update(self.source.position() - self.bar.n)
        self.bar.set_postfix(rows=f"{rows:,}", anomalies=f"{anomalies:,}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def count_anomalies(table: pa.Table) -> int:
    return int(pc.sum(table.column("is_anomaly")).as_py() or 0)


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def score_file(scorer: BatchScorer, source: Source, sink: Sink, *, progress: bool = True,
               workers: int | None = None, name: str = "", version: int = 0) -> Summary:
    """Score every row of `source` into `sink`; the output file appears only on success."""
    started = time.perf_counter()
    workers = workers or default_workers()
    rows = anomalies = 0
    pending: deque[Future] = deque()
    with closing(Progress(source, progress)) as bar, sink, \
            ThreadPoolExecutor(workers, thread_name_prefix="aeserve-score") as pool, \
            _WriterThread(sink) as write:

        def finish_oldest() -> None:
            nonlocal rows, anomalies
            table = pending.popleft().result()
            rows += table.num_rows
            anomalies += count_anomalies(table)
            write(table)
            bar.update(rows, anomalies)

        first_row = 0
        for batch in _read_ahead(source.batches):
            pending.append(pool.submit(scorer.score, batch, first_row))
            first_row += batch.num_rows
            if len(pending) > workers:
                finish_oldest()
        while pending:
            finish_oldest()
        if rows == 0:  # an empty input still gets a file with the output columns
            write(scorer.score(source.schema.empty_table()))
    return Summary("local", name, version, scorer.card.threshold, rows, anomalies,
                   time.perf_counter() - started, sink.path)


def _read_ahead(batches: Callable[[], Iterator[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """Iterate `batches()` in a thread, at most QUEUE_BATCHES ahead of the consumer."""
    handoff: queue.Queue = queue.Queue(QUEUE_BATCHES)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches():
                if not offer(batch):
                    return
            offer(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(exc)

    thread = threading.Thread(target=produce, name="aeserve-score-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _WriterThread:
    """`with _WriterThread(sink) as write:` hands tables to a thread that writes them in order;
    leaving the block waits for every write and raises the first write error."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.handoff: queue.Queue = queue.Queue(QUEUE_BATCHES)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="aeserve-score-writer",
                                       daemon=True)

    def _run(self) -> None:
        while (table := self.handoff.get()) is not _DONE:
            if self.error is None:
                try:
                    self.sink.write(table)
                except BaseException as exc:
                    self.error = exc

    def write(self, table: pa.Table) -> None:
        if self.error is not None:
            raise self.error
        self.handoff.put(table)

    def __enter__(self) -> Callable[[pa.Table], None]:
        self.thread.start()
        return self.write

    def __exit__(self, *exc_info) -> None:
        self.handoff.put(_DONE)
        self.thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error
