"""The operations on one model version: request bytes in, response bytes out.

Small requests are decoded and answered on the event loop (microseconds of work) and only the graph
run leaves it, merged with its neighbours by the model version's `MicroBatcher`. Large bodies are
decoded and serialised in a worker thread, so a 5 MB request never stalls the loop.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.batching import MicroBatcher
from service.codecs import BINARY_TYPE, NPY_TYPE, decode_instances, dumps, media_type
from service.decoder import DecoderProcess
from service.metrics import Metrics, observe_many
from service.repository import ModelVersion
from service.scoring import explanations, percentiles, verdicts
from service.settings import Settings

#: JSON bodies up to this size are decoded on the event loop; larger ones in a worker thread.
#: Binary bodies are always decoded on the loop: `np.frombuffer` and a finiteness check.
INLINE_BODY_BYTES = 64 * 1024
#: Responses of up to this many values are serialised on the event loop.
INLINE_RESPONSE_VALUES = 16 * 1024

PRIMARY_OUTPUT = {"encode": "embedding", "reconstruct": "reconstruction",
                  "anomaly-score": "score"}


@dataclass(frozen=True)
class ScoreOptions:
    """Query parameters of /anomaly-score: a threshold override and explanations."""

    threshold: float | None = None
    explain: bool = False
    top_k: int = 3

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("score", "feature_errors") if self.explain else ("score",)


@dataclass(frozen=True)
class Encoded:
    body: bytes
    media_type: str
    headers: dict[str, str]


def batcher_for(entry: ModelVersion, settings: Settings, metrics: Metrics,
                executor: Executor) -> MicroBatcher:
    """The version's batcher, made on first use and kept on its session."""
    session = entry.session
    batcher = getattr(session, "batcher", None)
    if batcher is None:
        labels = (entry.name, str(entry.version))

        batch_rows = metrics.batch_rows.labels(*labels)
        inference_seconds = metrics.inference_seconds.labels(*labels)
        queue_seconds = metrics.queue_seconds.labels(*labels)

        def record(rows: int, seconds: float, waits: list[float]) -> None:
            batch_rows.observe(rows)
            inference_seconds.observe(seconds)
            observe_many(queue_seconds, np.asarray(waits))

        def run(rows: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
            results = session.run(rows, outputs)
            return annotate_scores(entry, results, metrics) if "score" in results else results

        batcher = MicroBatcher(run, executor,
                               max_rows=settings.batch_max_rows,
                               max_delay_s=settings.batch_max_delay_ms / 1000.0,
                               on_batch=record)
        session.batcher = batcher
    return batcher


def annotate_scores(entry: ModelVersion, outputs: dict[str, np.ndarray],
                    metrics: Metrics) -> dict[str, np.ndarray]:
    """Add what the scores mean (verdicts, percentiles) and count them for alerting.

    Runs once per merged batch in the worker thread, not once per request on the event loop.
    """
    card = entry.card
    scores = outputs["score"]
    flagged = verdicts(scores, card.threshold)
    metrics.observe_scores(entry.name, entry.version, scores, card.threshold, flagged)
    return {**outputs, "is_anomaly": flagged,
            "percentile": percentiles(scores, card.score_quantiles).round(3)}


def wants(accept: str | None) -> str:
    """The response format the client asked for: JSON unless it names a binary type."""
    for part in (accept or "").split(","):
        kind = media_type(part)
        if kind in (BINARY_TYPE, NPY_TYPE):
            return kind
    return "application/json"


def encode_response(operation: str, entry: ModelVersion, outputs: dict[str, np.ndarray],
                    accept: str | None, options: ScoreOptions = ScoreOptions()) -> Encoded:
    """JSON by default; raw float32 rows or `.npy` when the client's Accept header asks."""
    fmt = wants(accept)
    result: dict[str, Any]
    threshold = entry.card.threshold
    if operation == "anomaly-score":
        flagged = outputs["is_anomaly"]
        if options.threshold is not None:  # the request's own threshold, card left unchanged
            threshold = options.threshold
            flagged = verdicts(outputs["score"], threshold)
        result = {"scores": outputs["score"], "threshold": threshold, "is_anomaly": flagged,
                  "percentiles": outputs["percentile"]}
        if options.explain:
            result["explanations"] = explanations(outputs["feature_errors"],
                                                  entry.card.feature_names, options.top_k)
    else:
        result = {{"encode": "embeddings", "reconstruct": "reconstructions"}[operation]:
                  outputs[PRIMARY_OUTPUT[operation]]}
    headers = {"X-Model": entry.name, "X-Model-Version": str(entry.version)}
    if fmt == "application/json":
        return Encoded(dumps({"model": entry.name, "version": entry.version, **result}),
                       "application/json", headers)
    primary = np.ascontiguousarray(outputs[PRIMARY_OUTPUT[operation]], dtype="<f4")
    headers["X-Shape"] = ",".join(str(n) for n in primary.shape)
    if operation == "anomaly-score":
        headers["X-Threshold"] = repr(threshold)
    if fmt == BINARY_TYPE:
        return Encoded(primary.tobytes(), BINARY_TYPE, headers)
    array: np.ndarray = primary
    if operation == "anomaly-score":  # one record per row: score, verdict, percentile
        array = np.empty(len(primary), dtype=[("score", "<f4"), ("is_anomaly", "?"),
                                              ("percentile", "<f4")])
        array["score"], array["is_anomaly"] = primary, result["is_anomaly"]
        array["percentile"] = result["percentiles"]
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return Encoded(buffer.getvalue(), NPY_TYPE, headers)


async def off_loop(executor: Executor, fn, *args):
    """Run `fn(*args)` in `executor` (a small, bounded pool: each thread that parses a large
    body keeps its allocator arena, so an unbounded pool would grow the resident memory)."""
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


async def run_operation(operation: str, entry: ModelVersion, body: bytes,
                        content_type: str | None, accept: str | None, settings: Settings,
                        metrics: Metrics, executor: Executor, codec_executor: Executor,
                        options: ScoreOptions = ScoreOptions(),
                        decoder: DecoderProcess | None = None) -> tuple[Encoded, int]:
    """Decode, infer through the batcher, encode; raises `service.errors` types on bad input."""
    names = entry.card.feature_names
    if len(body) <= INLINE_BODY_BYTES or media_type(content_type) == BINARY_TYPE:
        rows = decode_instances(body, content_type, names, settings.max_rows)
    elif decoder is not None and decoder.wants(body, content_type):
        rows = await decoder.decode(body, content_type, names, settings.max_rows)
    else:
        rows = await off_loop(codec_executor, decode_instances, body, content_type, names,
                              settings.max_rows)
    batcher = batcher_for(entry, settings, metrics, executor)
    wanted = options.outputs if operation == "anomaly-score" else (PRIMARY_OUTPUT[operation],)
    outputs = await batcher.submit(rows, wanted)
    metrics.rows_counter(entry.name, entry.version, operation).inc(len(rows))
    if outputs[PRIMARY_OUTPUT[operation]].size <= INLINE_RESPONSE_VALUES or wants(accept) != \
            "application/json":
        encoded = encode_response(operation, entry, outputs, accept, options)
    else:
        encoded = await off_loop(codec_executor, encode_response, operation, entry, outputs,
                                 accept, options)
    return encoded, len(rows)
