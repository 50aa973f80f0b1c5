"""POST /models/{name}/stream: readings of named series in, each reading's score, verdict and
alarm out, with the series' last readings and alarm kept between requests.

    {"series": "pump-7", "rows": [[...], ...]}
    {"streams": [{"series": "pump-7", "rows": [...]}, {"series": "pump-9", "rows": [...]}]}

Rows are readings of the model's own features (a windowed model's `window.features`, each
reading once), oldest first. A windowed model scores a reading with the W - 1 readings before
it (aeserve/artifact/streams.py keeps them); the first W - 1 readings of a series answer no
score. Every series' alarm (aeserve/artifact/alarms.py, its policy from the model's config.json)
runs over its scores in order.

The windows of every series in a request are scored in one run through the version's batcher,
as /anomaly-score's rows are. A model's streams are taken one request at a time (a lock per
model): a series' readings must reach its window and its alarm in the order they were sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from aeserve.artifact.alarms import AlarmPolicy
from aeserve.artifact.scores import explanations
from aeserve.artifact.streams import (
    SERIES_NAME_RULE,
    SeriesStore,
    StoreCounts,
    Windows,
    is_series_name,
    runnable,
)
from aeserve.artifact.windows import per_feature
from aeserve.serving.codecs import check_rows, decode_rows, dumps, parse_json
from aeserve.serving.dataplane import require_finite
from aeserve.serving.decoding import BodyDecoder
from aeserve.serving.errors import (
    EmptyInstances,
    InvalidInstances,
    InvalidParameter,
    MissingInstances,
    NonFiniteResult,
    StreamNeedsOneWorker,
    TooManyRows,
    TooManySeries,
    UnknownModel,
)
from aeserve.serving.metrics import Metrics
from aeserve.serving.repository import ModelRepository, ModelVersion
from aeserve.serving.settings import Settings

T = TypeVar("T")

#: Requests with up to this many series are cut and answered on the event loop; more, in a
#: worker thread (100,000 series held the loop for 6-10 s).
INLINE_SERIES = 64

#: Top features named per reading when a request asks for explanations.
TOP_K = 3


@dataclass(frozen=True)
class StreamPart:
    """One series' readings in a request."""

    series: str | int
    rows: np.ndarray


@dataclass
class _ModelStreams:
    """The series state of one model, and what it was made for: a new version with another
    window or other features, or a new alarm policy, starts it afresh."""

    store: SeriesStore
    shape: tuple[int, tuple[str, ...], AlarmPolicy]
    lock: asyncio.Lock
    reported: StoreCounts


class StreamService:
    """Every model's series state in this worker, and the stream route's steps."""

    def __init__(self, settings: Settings, repository: ModelRepository, metrics: Metrics,
                 decoder: BodyDecoder) -> None:
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self.decoder = decoder
        self.models: dict[str, _ModelStreams] = {}

    async def stream(self, name: str, body: bytes) -> tuple[bytes, int]:
        """The JSON answer to one stream request, and the readings it held."""
        if self.settings.workers > 1:
            raise StreamNeedsOneWorker(
                f"streams keep each series' readings in one process; this server runs "
                f"{self.settings.workers} workers (AESERVE_WORKERS=1 for streams)")
        entry = self.repository.get(name)
        features = entry.card.reading_features
        limits = (self.settings.max_rows, self.settings.stream_max_series_per_request)
        if self.decoder.decodes_inline(body, None):
            parts, explain = parse_stream_request(body, features, *limits)
        else:  # a large body is parsed off the event loop
            parts, explain = await self.decoder.in_thread(parse_stream_request, body, features,
                                                          *limits)
        series_count = len({str(p.series) for p in parts})
        if series_count > self.settings.stream_max_series:
            raise TooManySeries(f"{series_count} series exceed the "
                                f"{self.settings.stream_max_series} kept "
                                "(AESERVE_STREAM_MAX_SERIES)", series=series_count)
        streams = self._streams(entry)
        async with streams.lock:
            answer = await self._score(entry, streams, parts, explain)
        self._report(entry.name, streams)
        return dumps(answer), sum(len(p.rows) for p in parts)

    async def _score(self, entry: ModelVersion, streams: _ModelStreams, parts: list[StreamPart],
                     explain: bool) -> dict[str, Any]:
        store, card = streams.store, entry.card
        # Many series are cut and answered in a worker thread: the event loop stays free (the
        # store is still one request's at a time, under `streams.lock`).
        off_loop = len(parts) > INLINE_SERIES

        async def work(fn: Callable[..., T], *args: Any) -> T:
            return await self.decoder.in_thread(fn, *args) if off_loop else fn(*args)

        # Nothing is kept before every window scored: a refused request leaves no trace.
        cut = await work(store.cut, [(str(p.series), p.rows) for p in parts])
        windows = np.concatenate([c.windows for c in cut])
        wanted = ("score", "feature_errors") if explain else ("score",)
        outputs: dict[str, np.ndarray] = {}
        if len(windows):
            outputs = await entry.batcher.submit(runnable(windows), wanted)
            outputs = {name: values[:len(windows)] for name, values in outputs.items()}
            try:
                require_finite(outputs, wanted)
            except NonFiniteResult as error:
                refused = _non_finite_readings(parts, cut, error)
                for named in refused.detail["readings"]:
                    store.forget(str(named["series"]))
                self._report(entry.name, streams)
                raise refused from None
            self.metrics.rows_counter(entry.name, entry.version, "stream").inc(len(windows))
        threshold = card.threshold

        def answer_all() -> list[dict[str, Any]]:
            answers, start = [], 0
            for part, windowed in zip(parts, cut, strict=True):
                stop = start + len(windowed.windows)
                answers.append(self._answer(store, part, windowed, outputs,
                                            slice(start, stop), threshold, explain, entry))
                start = stop
            return answers

        answers = await work(answer_all)
        return {"model": entry.name, "version": entry.version, "threshold": threshold,
                "window": card.window_size,
                "series": answers}

    def _answer(self, store: SeriesStore, part: StreamPart, cut: Windows,
                outputs: dict[str, np.ndarray], rows: slice, threshold: float, explain: bool,
                entry: ModelVersion) -> dict[str, Any]:
        """One series' part of the answer, its readings kept and its alarm run in `store` (the
        one that cut its windows, even if an edited config.json replaced it meanwhile)."""
        scores = outputs["score"][rows] if outputs else np.empty(0, dtype=np.float32)
        ends = cut.ends
        answer = {"series": part.series,
                  **store.answer(str(part.series), cut, scores, threshold)}
        if explain:
            errors = outputs["feature_errors"][rows] if outputs else np.empty((0, 0))
            found = (explanations(per_feature(errors, entry.card.window_size),
                                  entry.card.reading_features, TOP_K)
                     if len(errors) else [])
            answer["explanations"] = [None] * len(part.rows)
            for k, end in enumerate(ends.tolist()):
                answer["explanations"][end] = found[k]
        return answer

    def _streams(self, entry: ModelVersion) -> _ModelStreams:
        """The model's series state, made afresh when the window, the features or the alarm
        policy changed (a new version, or config.json edited)."""
        card = entry.card
        size = card.window_size
        models = self.repository.models  # one read: a refresh swaps the whole table
        for gone in self.models.keys() - models.keys():  # removed models' series go with them
            del self.models[gone]
            for gauge in (self.metrics.stream_series, self.metrics.stream_series_in_alarm):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        served = models.get(entry.name)
        if served is None:  # removed while this request's body was read
            raise UnknownModel(f"unknown model {entry.name!r}", model=entry.name,
                               available=sorted(models))
        policy = served.alarm
        shape = (size, tuple(card.reading_features), policy)
        streams = self.models.get(entry.name)
        if streams is None or streams.shape != shape:
            store = SeriesStore(size, len(shape[1]), policy,
                                max_series=self.settings.stream_max_series,
                                idle_s=self.settings.stream_idle_s)
            streams = self.models[entry.name] = _ModelStreams(
                store, shape, asyncio.Lock(), StoreCounts())
        return streams

    def _report(self, name: str, streams: _ModelStreams) -> None:
        """Bring the stream metrics up to the store's counts."""
        metrics = self.metrics
        for kind, label, n in streams.reported.advance(streams.store.counts):
            counter = metrics.alarm_events if kind == "event" else metrics.stream_dropped_series
            counter.labels(name, label).inc(n)
        metrics.stream_series.labels(name).set(len(streams.store))
        metrics.stream_series_in_alarm.labels(name).set(streams.store.active_alarms)


def _non_finite_readings(parts: list[StreamPart], cut: list[Windows],
                         error: NonFiniteResult) -> NonFiniteResult:
    """The 422 for windows whose outputs overflowed, naming series and readings rather than
    positions among the request's windows; none of the request's readings is kept, and the
    series named are forgotten (`SeriesStore.forget` says why)."""
    rows, start, named = set(error.detail.get("rows", [])), 0, []
    for part, windowed in zip(parts, cut, strict=True):
        for k, end in enumerate(windowed.ends.tolist()):
            if start + k in rows:
                named.append({"series": part.series, "reading": end})
        start += len(windowed.windows)
    first = named[0] if named else None
    where = (f"series {first['series']!r}, reading {first['reading']}" if first
             else "some readings")
    return NonFiniteResult(
        f"{len(named) or len(rows)} window(s) give a non-finite {error.detail.get('output')} "
        f"(first: {where}): their readings are too large for the model's float32 arithmetic; "
        "scale them down. None of this request's readings was kept, and the series named "
        "here start over from a new window (a reading too large may have been kept unscored "
        "from an earlier request).",
        readings=named[:100], output=error.detail.get("output"))


def parse_stream_request(body: bytes, features: list[str], max_rows: int,
                         max_series: int | None = None) -> tuple[list[StreamPart], bool]:
    """The request's series and their readings (checked as /anomaly-score checks rows), and
    whether it asks for explanations; typed 4xx errors name what is wrong. With `max_series`,
    a request holding more entries is refused before any of them is read."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise MissingInstances('the body must be a JSON object: {"series": ..., "rows": [...]} '
                               'or {"streams": [{"series": ..., "rows": [...]}, ...]}')
    unknown = sorted(set(payload) - {"series", "rows", "streams", "explain"})
    if unknown:
        raise InvalidParameter(f"unknown keys {unknown}; known: series, rows, streams, explain")
    explain = payload.get("explain", False)
    if not isinstance(explain, bool):
        raise InvalidParameter('"explain" must be true or false')
    if "streams" in payload:
        if "series" in payload or "rows" in payload:
            raise InvalidParameter('send either "streams" or one "series" with its "rows"')
        items = payload["streams"]
        if not isinstance(items, list) or not items:
            raise EmptyInstances('"streams" must be a non-empty list of {"series", "rows"}')
        if max_series is not None and len(items) > max_series:
            raise TooManySeries(f"{len(items)} series in one request exceed the limit of "
                                f"{max_series} (AESERVE_STREAM_MAX_SERIES_PER_REQUEST)",
                                series=len(items), max_series=max_series)
    else:
        items = [{k: payload[k] for k in ("series", "rows") if k in payload}]
    parts, total = [], 0
    for i, item in enumerate(items):
        where = f"streams[{i}]" if "streams" in payload else "the body"
        if not isinstance(item, dict) or set(item) != {"series", "rows"}:
            raise MissingInstances(f'{where} must hold exactly "series" and "rows"')
        series = item["series"]
        if not is_series_name(series):
            raise InvalidInstances(f"{where}: series must be {SERIES_NAME_RULE}")
        rows = decode_rows(item["rows"], features, max_rows, field="rows")
        total += len(rows)
        if total > max_rows:
            raise TooManyRows(f"{total} or more readings exceed the limit of {max_rows}",
                              rows=total, max_rows=max_rows)
        check_rows(rows, max_rows)
        parts.append(StreamPart(series, rows))
    return parts, explain
