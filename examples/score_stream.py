"""Score a stream of JSON lines with a running aeserve server; print the anomalous ones.

    tail -F readings.jsonl | python examples/score_stream.py --url http://127.0.0.1:8000 \\
        --model http

Each input line is a JSON object holding the model's features by name; its other keys (an id, a
timestamp, a host) are passed through to the output. Lines are grouped into micro-batches of up to
`--batch-size` lines, or whatever arrived within `--max-wait` seconds, and each batch is one
request. Every line above the model's threshold is printed as one JSON line with its score,
percentile and the model version that scored it (`--all` prints every line). A line that is not
JSON or lacks a feature is reported on stderr and skipped: one bad line does not stop a stream.

Needs the client only (`pip install 'aeserve[client]'`). `score_batches` is the loop to reuse
with another source, e.g. a message queue consumer.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from aeserve.client import Client, InvalidInstances

_END = object()


def micro_batches(lines: Iterable[str], batch_size: int, max_wait: float) -> Iterator[list[str]]:
    """Group lines into lists of at most `batch_size`, flushing after `max_wait` seconds even if
    the source blocks (as `tail -F` does between writes)."""
    handoff: queue.Queue = queue.Queue(maxsize=4 * batch_size)

    def read() -> None:
        for line in lines:
            handoff.put(line)
        handoff.put(_END)

    threading.Thread(target=read, daemon=True).start()
    batch: list[str] = []
    deadline = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            item = handoff.get(timeout=timeout)
        except queue.Empty:
            item = None
        if item is _END:
            if batch:
                yield batch
            return
        if item is not None and item.strip():
            batch.append(item)
            deadline = deadline or time.monotonic() + max_wait
        if batch and (len(batch) >= batch_size or time.monotonic() >= (deadline or 0)):
            yield batch
            batch, deadline = [], None


class StreamScorer:
    """Splits each record into the model's features and the rest, scores, and annotates."""

    def __init__(self, client: Client, model: str | None, errors: TextIO = sys.stderr) -> None:
        self.client = client
        self.model = model
        info = client.model(model) if model else None
        self.features = info.feature_names if info else None
        self.errors = errors
        self.counts = {"scored": 0, "anomalies": 0, "skipped": 0}

    def _features(self) -> list[str]:
        if self.features is None:  # the default model: ask which one it is
            default = next(m for m in self.client.models() if m.default)
            self.model, self.features = default.name, self.client.model(default.name).feature_names
        return self.features

    def parse(self, line: str, number: int) -> tuple[dict, dict] | None:
        try:
            record = json.loads(line)
            names = self._features()
            features = {name: record[name] for name in names}
        except (ValueError, KeyError, TypeError) as exc:
            self.skip(number, f"{type(exc).__name__}: {exc}")
            return None
        rest = {k: v for k, v in record.items() if k not in features}
        return features, rest

    def skip(self, number: int, why: str) -> None:
        self.counts["skipped"] += 1
        print(f"line {number} skipped: {why}", file=self.errors)

    def score(self, records: list[tuple[int, dict, dict]]) -> list[dict[str, Any]]:
        if not records:
            return []
        try:
            result = self.client.anomaly_score([f for _, f, _ in records], model=self.model)
        except InvalidInstances as exc:
            if len(records) == 1:
                self.skip(records[0][0], exc.message)
                return []
            # one bad value spoils the request: score line by line to keep the good ones
            return [out for record in records for out in self.score([record])]
        self.counts["scored"] += len(records)
        self.counts["anomalies"] += int(result.is_anomaly.sum())
        return [{**rest, "score": round(float(result.scores[i]), 6),
                 "percentile": float(result.percentiles[i]),
                 "is_anomaly": bool(result.is_anomaly[i]),
                 "model": result.model, "version": result.version}
                for i, (_, _, rest) in enumerate(records)]


def score_batches(scorer: StreamScorer, batches: Iterable[list[str]]) -> Iterator[dict]:
    """Every scored line of every batch, in order; line numbers count from 1."""
    number = 0
    for batch in batches:
        records = []
        for line in batch:
            number += 1
            parsed = scorer.parse(line, number)
            if parsed is not None:
                records.append((number, *parsed))
        yield from scorer.score(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default=None, help="model name (default: the server's)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-wait", type=float, default=0.5, help="seconds")
    parser.add_argument("--all", action="store_true", help="print every line, not only anomalies")
    args = parser.parse_args(argv)
    with Client(args.url, api_key=args.api_key, retries=5) as client:
        scorer = StreamScorer(client, args.model)
        for out in score_batches(scorer, micro_batches(sys.stdin, args.batch_size,
                                                       args.max_wait)):
            if args.all or out["is_anomaly"]:
                print(json.dumps(out), flush=True)
    counts = scorer.counts
    share = 100 * counts["anomalies"] / counts["scored"] if counts["scored"] else 0.0
    print(f"scored {counts['scored']} lines: {counts['anomalies']} anomalies ({share:.1f} %), "
          f"{counts['skipped']} skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
