"""Adaptive micro-batching: concurrent requests for one model version share one onnxruntime run.

A request goes straight to the graph when no run is under way for its model version, so a lone
client never waits. While a run is under way, new requests queue; the queue is dispatched as one
merged run when the current run finishes, when it holds `max_rows` rows, or after `max_delay_s`,
whichever comes first. Under load, batches therefore grow to match the arrival rate, and a
thousand one-row requests cost a few dozen graph runs instead of a thousand thread hand-offs.

Runs happen in a worker thread (onnxruntime releases the GIL), never on the event loop. A request
of `max_rows` rows or more runs alone. If a merged run fails, each of its requests is retried on its
own, so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

RunFn = Callable[[np.ndarray, Sequence[str]], dict[str, np.ndarray]]


@dataclass
class _Pending:
    rows: np.ndarray
    outputs: tuple[str, ...]
    future: asyncio.Future
    queued_at: float


class MicroBatcher:
    """Merges concurrent requests for one model version; one instance per version and loop."""

    def __init__(self, run: RunFn, executor: Executor, max_rows: int, max_delay_s: float,
                 on_batch: Callable[[int, float, list[float]], None] | None = None,
                 drift: Any = None) -> None:
        #: The version's drift monitor (serving/drift.py), which `run` feeds: kept here, with
        #: the batcher that lives and dies with the version. None without one.
        self.drift = drift
        self._run = run
        self._executor = executor
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._on_batch = on_batch  # (rows, run seconds, queue seconds of each request)
        self._pending: list[_Pending] = []
        self._pending_rows = 0
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    async def submit(self, rows: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """The named outputs of the graph for `rows`, computed alone or in a merged batch.

        A merged run computes the union of what its requests asked for; each request gets at
        least its own outputs back.
        """
        loop = self._loop = asyncio.get_running_loop()
        item = _Pending(rows, tuple(outputs), loop.create_future(), time.perf_counter())
        if len(rows) >= self.max_rows or self.closed:
            self._start([item])
        else:
            if self._pending_rows + len(rows) > self.max_rows:
                self._flush()
            self._pending.append(item)
            self._pending_rows += len(rows)
            if self._running == 0 or self._pending_rows >= self.max_rows:
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self.max_delay_s, self._flush)
        return await item.future

    def close(self) -> None:
        """The version stops serving: what is queued runs now, and the requests that still
        hold the version (they resolved it before it went) run alone, without waiting for
        neighbours that will not come. Safe to call from any thread."""
        self.closed = True
        if self.drift is not None:
            self.drift.close()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            batch, self._pending, self._pending_rows = self._pending, [], 0
            self._start(batch)

    def _start(self, batch: list[_Pending]) -> None:
        self._running += 1
        asyncio.get_running_loop().create_task(self._execute(batch))

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([b.rows for b in batch])
            names = tuple(dict.fromkeys(name for b in batch for name in b.outputs))
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, rows, names)
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0].future, error=exc)
                else:  # find the culprit: every request again, on its own
                    for item in batch:
                        self._start([item])
                return
            if self._on_batch is not None:
                self._on_batch(len(rows), time.perf_counter() - started,
                               [started - b.queued_at for b in batch])
            offset = 0
            for item in batch:
                end = offset + len(item.rows)
                _settle(item.future, result={k: v[offset:end] for k, v in outputs.items()})
                offset = end
        except Exception as exc:  # never leave a caller waiting
            for item in batch:
                _settle(item.future, error=exc)
        finally:
            self._running -= 1
            if self._running == 0 and self._pending:
                self._flush()


def _settle(future: asyncio.Future, result: dict | None = None,
            error: BaseException | None = None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
