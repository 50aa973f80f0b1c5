"""The micro-batcher: merging, order, splitting, isolation of failures, latency when idle."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from aeserve.serving.batching import MicroBatcher

OUT = ("score", "embedding")


class FakeGraph:
    """score = row sum; `embedding` = the row doubled. Records every batch it runs."""

    def __init__(self, delay: float = 0.0, poison: float | None = None) -> None:
        self.batches: list[int] = []
        self.requested: list[tuple[str, ...]] = []
        self.delay = delay
        self.poison = poison
        self.lock = threading.Lock()

    def __call__(self, rows: np.ndarray, outputs) -> dict[str, np.ndarray]:
        with self.lock:
            self.batches.append(len(rows))
            self.requested.append(tuple(outputs))
        time.sleep(self.delay)
        if self.poison is not None and (rows == self.poison).any():
            raise ValueError("poisoned row")
        every = {"score": rows.sum(axis=1), "embedding": rows * 2}
        return {name: every[name] for name in outputs}


def batcher(graph: FakeGraph, max_rows: int = 64, delay_s: float = 0.05) -> MicroBatcher:
    executor = ThreadPoolExecutor(max_workers=1)
    return MicroBatcher(graph, executor, max_rows, delay_s)


def rows(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 3), value, dtype=np.float32)


def test_lone_request_runs_at_once():
    graph = FakeGraph()
    b = batcher(graph, delay_s=5.0)

    async def main():
        started = time.perf_counter()
        out = await b.submit(rows(1.0, 2), OUT)
        return out, time.perf_counter() - started

    out, elapsed = asyncio.run(main())
    assert elapsed < 1.0  # did not wait for the 5 s delay
    assert out["score"].tolist() == [3.0, 3.0]
    assert graph.batches == [2]


def test_concurrent_requests_merge_and_split_back_in_order():
    graph = FakeGraph(delay=0.05)
    b = batcher(graph)

    async def main():
        return await asyncio.gather(*(b.submit(rows(float(i), i % 3 + 1), OUT)
                                      for i in range(20)))

    results = asyncio.run(main())
    for i, out in enumerate(results):
        assert out["score"].tolist() == [3.0 * i] * (i % 3 + 1)
        assert out["embedding"].shape == (i % 3 + 1, 3)
    assert sum(graph.batches) == sum(i % 3 + 1 for i in range(20))
    assert len(graph.batches) < 20  # merged: the first ran alone, the rest queued behind it
    assert max(graph.batches) <= 64


def test_batches_never_exceed_max_rows_and_large_requests_run_alone():
    graph = FakeGraph(delay=0.02)
    b = batcher(graph, max_rows=8)

    async def main():
        return await asyncio.gather(b.submit(rows(1.0, 30), OUT),
                                    *(b.submit(rows(2.0, 3), OUT) for _ in range(10)))

    results = asyncio.run(main())
    assert results[0]["score"].shape == (30,)
    assert 30 in graph.batches
    assert all(n <= 8 for n in graph.batches if n != 30)
    assert sum(graph.batches) == 60


def test_max_delay_bounds_the_wait_while_a_run_is_busy():
    graph = FakeGraph(delay=0.3)
    b = batcher(graph, delay_s=0.01)
    executor_runs: list[float] = []

    async def main():
        first = asyncio.create_task(b.submit(rows(1.0), OUT))
        await asyncio.sleep(0.05)  # the first run is busy for 0.3 s
        started = time.perf_counter()
        await b.submit(rows(2.0), OUT)
        executor_runs.append(time.perf_counter() - started)
        await first

    asyncio.run(main())
    # dispatched after 10 ms, but the single executor thread finishes the first run before it
    assert graph.batches == [1, 1]
    assert executor_runs[0] < 0.6


def test_a_failing_request_does_not_fail_its_neighbours():
    graph = FakeGraph(delay=0.02, poison=-1.0)
    b = batcher(graph)

    async def main():
        first = asyncio.create_task(b.submit(rows(0.0), OUT))
        await asyncio.sleep(0.005)
        batch = [b.submit(rows(v), OUT) for v in (1.0, -1.0, 2.0)]
        results = await asyncio.gather(*batch, return_exceptions=True)
        await first
        return results

    ok1, bad, ok2 = asyncio.run(main())
    assert ok1["score"].tolist() == [3.0] and ok2["score"].tolist() == [6.0]
    assert isinstance(bad, ValueError)


def test_on_batch_reports_rows_duration_and_waits():
    reports = []
    graph = FakeGraph()
    b = MicroBatcher(graph, ThreadPoolExecutor(1), 64, 0.01,
                     on_batch=lambda n, s, waits: reports.append((n, s, waits)))
    asyncio.run(b.submit(rows(1.0, 5), OUT))
    (n, seconds, waits), = reports
    assert n == 5 and seconds >= 0 and len(waits) == 1 and waits[0] >= 0


@pytest.mark.parametrize("n_clients", [1, 32])
def test_results_identical_to_direct_runs(n_clients):
    graph = FakeGraph()
    b = batcher(graph, max_rows=16)
    inputs = [np.random.default_rng(i).normal(size=(i % 5 + 1, 3)).astype(np.float32)
              for i in range(n_clients)]

    async def main():
        return await asyncio.gather(*(b.submit(x, OUT) for x in inputs))

    for x, out in zip(inputs, asyncio.run(main()), strict=True):
        np.testing.assert_array_equal(out["score"], x.sum(axis=1))


def test_a_merged_run_computes_the_union_of_requested_outputs():
    graph = FakeGraph(delay=0.05)
    b = batcher(graph)

    async def main():
        first = asyncio.create_task(b.submit(rows(1.0), ("score",)))
        await asyncio.sleep(0.01)
        merged = await asyncio.gather(b.submit(rows(2.0), ("score",)),
                                      b.submit(rows(3.0), ("embedding",)))
        return await first, merged

    alone, (score, embedding) = asyncio.run(main())
    assert set(alone) == {"score"}
    assert graph.requested == [("score",), ("score", "embedding")]
    assert score["score"].tolist() == [6.0] and embedding["embedding"].shape == (1, 3)


def test_close_runs_what_is_queued_and_stops_merging():
    graph = FakeGraph(delay=0.05)
    b = batcher(graph, delay_s=10.0)  # a queued request would wait for the run or 10 s

    async def main():
        busy = asyncio.ensure_future(b.submit(rows(1.0), OUT))  # runs at once
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(b.submit(rows(2.0), OUT))  # waits behind it
        await asyncio.sleep(0.01)
        b.close()
        late = [asyncio.ensure_future(b.submit(rows(3.0), OUT)) for _ in range(2)]
        return await asyncio.gather(busy, queued, *late)

    results = asyncio.run(main())
    assert [float(r["score"][0]) for r in results] == [3.0, 6.0, 9.0, 9.0]
    assert b.closed and graph.batches == [1, 1, 1, 1]  # after close, nothing merges
