"""Per-series state for scoring streams: each series' last readings and its alarm.

A windowed model scores a reading with the W - 1 readings before it, which an earlier request
(or message) brought. `SeriesStore` keeps them per series, so that a client sends each reading
once. Taking readings is two steps, so that readings whose scoring fails leave no trace: `cut`
turns new readings into the windows that end at them (artifact/windows.py's layout, so a
streamed window is the same values as the batch one) without changing the store, and `answer`,
once their scores are known, keeps them (`take`) and runs the series' alarm (artifact/alarms.py)
over the scores in order. A row model is the case W = 1: no readings kept, the alarm still per
series.

Memory is bounded whatever the traffic: at most `max_series` series are kept, the least recently
seen evicted first, and a series unseen for `idle_s` seconds is dropped (its next reading starts
a new window). Each costs (W - 1) * d float32 values plus its alarm's few numbers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from aeserve.artifact.alarms import AlarmPolicy, AlarmState, Event
from aeserve.artifact.names import encodes_as_utf8
from aeserve.artifact.scores import verdicts

#: Longest series name: characters, or digits of an integer (as the server's request ids).
MAX_SERIES_LENGTH = 256
#: `is_series_name`'s rule, for the messages that refuse a name.
SERIES_NAME_RULE = (f"a non-empty string or an integer of at most {MAX_SERIES_LENGTH} "
                    "characters, valid Unicode text (no lone surrogate)")


def is_series_name(value: object) -> bool:
    """Whether `value` can name a series: a non-empty string or an integer (not a boolean) of
    at most `MAX_SERIES_LENGTH` characters, with a UTF-8 encoding. The server and the runner
    accept the same names."""
    return (isinstance(value, str | int) and not isinstance(value, bool) and value != ""
            and len(str(value)) <= MAX_SERIES_LENGTH and encodes_as_utf8(value))


def runnable(windows: np.ndarray) -> np.ndarray:
    """`windows` as they should be run so that each scores exactly as in a batch: a lone window
    twice over (keep the first result). onnxruntime multiplies a single row by another kernel
    than several rows, whose sums round differently in the last bit (281 of 295 windows of the
    tests' model differed), so a window streamed alone would not equal its batch score."""
    return np.repeat(windows, 2, axis=0) if len(windows) == 1 else windows


@dataclass(slots=True)
class SeriesState:
    """One series: its last readings (oldest first; `filled` of them are real) and its alarm."""

    tail: np.ndarray
    filled: int
    alarm: AlarmState
    seen: float = 0.0


@dataclass(frozen=True)
class Windows:
    """New readings of one series turned into windows: `windows[i]` ends at the reading
    `ends[i]` of the `readings` sent; readings before the series' first full window have none.
    `tail` and `filled` are what the series keeps once they are taken (`SeriesStore.take`)."""

    windows: np.ndarray
    ends: np.ndarray
    readings: int
    tail: np.ndarray
    filled: int


@dataclass
class StoreCounts:
    """What `SeriesStore` did, for metrics: series dropped, by reason."""

    evicted: int = 0
    expired: int = 0
    overflow: int = 0
    events: dict[str, int] = field(default_factory=lambda: {"start": 0, "end": 0})

    def advance(self, to: StoreCounts) -> list[tuple[str, str, int]]:
        """Bring these counts (those already reported) up to `to`, and say what happened in
        between: ("event", "start" | "end", n) and ("dropped", "evicted" | "expired" |
        "overflow", n), each with n > 0, for counters that only go up."""
        news = [("event", event, to.events[event] - self.events[event]) for event in self.events]
        news += [("dropped", reason, getattr(to, reason) - getattr(self, reason))
                 for reason in ("evicted", "expired", "overflow")]
        self.events = dict(to.events)
        self.evicted, self.expired, self.overflow = to.evicted, to.expired, to.overflow
        return [(kind, label, n) for kind, label, n in news if n > 0]


class SeriesStore:
    """The state of every live series of one model (module docstring). Not thread-safe: the
    caller serializes the calls for one store, since a series' readings must be taken in order."""

    def __init__(self, size: int, width: int, policy: AlarmPolicy, *, max_series: int,
                 idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.size, self.width, self.policy = size, width, policy
        self.max_series, self.idle_s, self.clock = max_series, idle_s, clock
        self.series: OrderedDict[str, SeriesState] = OrderedDict()
        self.counts = StoreCounts()
        #: Series in alarm now, of those kept.
        self.active_alarms = 0

    def __len__(self) -> int:
        return len(self.series)

    def cut(self, parts: Sequence[tuple[str, np.ndarray]]) -> list[Windows]:
        """The windows that each part's new readings ([m, d], in time order) complete, flattened
        as the graph reads them; a series' later parts continue its earlier ones. The store is
        not changed: `answer` (or `take`) keeps the readings once they are scored."""
        now, latest = self.clock(), {}
        out = []
        for series, readings in parts:
            before = latest.get(series)
            if before is None:
                state = self.series.get(series)
                if state is None or self._idle(state, now):  # new, or expired
                    tail, filled = np.zeros((self.size - 1, self.width), np.float32), 0
                else:
                    tail, filled = state.tail, state.filled
            else:
                tail, filled = before.tail, before.filled
            latest[series] = cut = self._windows(tail, filled, readings)
            out.append(cut)
        return out

    def _windows(self, tail: np.ndarray, before: int, readings: np.ndarray) -> Windows:
        keep = self.size - 1
        joined = np.concatenate([tail[keep - before:], readings]) if keep else readings
        ends = np.arange(max(0, keep - before), len(readings), dtype=np.int64)
        if len(ends):
            starts = ends + before - keep  # positions in `joined`
            index = starts[:, None] + np.arange(self.size)[None, :]
            windows = joined[index].reshape(len(ends), -1).astype(np.float32, copy=False)
        else:
            windows = np.empty((0, self.size * self.width), dtype=np.float32)
        if keep:
            taken = min(keep, len(joined))
            tail = np.concatenate([tail, joined[len(joined) - taken:]])[-keep:]
        return Windows(windows=np.ascontiguousarray(windows), ends=ends, readings=len(readings),
                       tail=tail.astype(np.float32, copy=False),
                       filled=min(keep, before + len(readings)))

    def take(self, series: str, cut: Windows) -> SeriesState:
        """Keep a series' readings that `cut` turned into windows: its state moves on past them
        (the series is made, or made the most recently seen, evicting beyond `max_series`)."""
        state = self._state(series)
        state.tail, state.filled = cut.tail, cut.filled
        return state

    def _run_alarm(self, state: SeriesState, scores: np.ndarray, threshold: float
                   ) -> tuple[list[float], list[bool], list[Event]]:
        alarm = state.alarm
        smoothed, active, events = [], [], []
        for score in scores.tolist():
            value, on, event = alarm.step(score, threshold)
            smoothed.append(value)
            active.append(on)
            events.append(event)
            if event is not None:
                self.counts.events[event] += 1
                self.active_alarms += 1 if event == "start" else -1
        return smoothed, active, events

    def answer(self, series: str, cut: Windows, scores: np.ndarray, threshold: float
               ) -> dict[str, list]:
        """Take the readings `cut` made windows of (`take`) and answer each: its score (None
        before the series' first full window), verdict, smoothed score, whether the series is
        in alarm after it, and the alarm's event there. `scores` are those of `cut.windows`;
        the alarm runs over them in order."""
        readings, ends = cut.readings, cut.ends
        self._expire(self.clock())  # an expired series starts out of alarm
        was_on = self.in_alarm(series)
        state = self.take(series, cut)
        smoothed, on, events = self._run_alarm(state, scores, threshold)
        flagged = verdicts(scores, threshold).tolist()
        answer: dict[str, list] = {"scores": [None] * readings, "is_anomaly": [None] * readings,
                                   "smoothed": [None] * readings, "alarm": [was_on] * readings,
                                   "events": [None] * readings}
        ends_list = ends.tolist()
        for k, end in enumerate(ends_list):
            answer["scores"][end] = float(scores[k])
            answer["is_anomaly"][end] = flagged[k]
            answer["smoothed"][end] = smoothed[k]
            answer["events"][end] = events[k]
            # the state after a scored reading holds until the next scored one
            following = ends_list[k + 1] if k + 1 < len(ends_list) else readings
            answer["alarm"][end:following] = [on[k]] * (following - end)
        return answer

    def forget(self, series: str) -> None:
        """Drop a series whose windows could not be scored (their scores overflowed float32).
        Readings that complete no window are kept unscored, so a reading too large for the
        model can wait in a series' last readings; forgetting them is what lets the series'
        next readings be scored again, from a new window."""
        state = self.series.pop(series, None)
        if state is not None:
            self.active_alarms -= state.alarm.active
            self.counts.overflow += 1

    def in_alarm(self, series: str) -> bool:
        """Whether the series is in alarm now (False for a series not kept)."""
        state = self.series.get(series)
        return state is not None and state.alarm.active

    def _state(self, series: str) -> SeriesState:
        now = self.clock()
        self._expire(now)
        state = self.series.get(series)
        if state is None:
            state = SeriesState(tail=np.zeros((self.size - 1, self.width), dtype=np.float32),
                                filled=0, alarm=AlarmState(self.policy))
            self.series[series] = state
            while len(self.series) > self.max_series:
                self._drop()
                self.counts.evicted += 1
        else:
            self.series.move_to_end(series)
        state.seen = now
        return state

    def _expire(self, now: float) -> None:
        """Drop the series unseen for `idle_s`: they are the oldest in the LRU order."""
        while self.series:
            if not self._idle(next(iter(self.series.values())), now):
                return
            self._drop()
            self.counts.expired += 1

    def _idle(self, state: SeriesState, now: float) -> bool:
        """Whether `state`'s series has gone unseen for longer than `idle_s`: it is dropped."""
        return now - state.seen > self.idle_s

    def _drop(self) -> None:
        """Forget the least recently seen series (an alarm it was in ends unannounced)."""
        _, state = self.series.popitem(last=False)
        self.active_alarms -= state.alarm.active
