"""Messages of readings in, messages of scores and alarms out: the stream runner's scoring, with
no broker in it (aeserve/batch/stream_runner.py moves the messages).

A message is one series' readings, as POST /models/{name}/stream takes them:

    {"series": "pump-7", "rows": [[0.1, 2.3], ...]}      or  {"series": "pump-7", "row": [0.1, 2.3]}

rows as lists in the model's feature order or objects keyed by feature name, with an optional
"id" (a string or an integer) echoed in the answer. The answer has the HTTP
route's shape for one series: per reading its score, verdict, smoothed score, alarm state and
alarm event (aeserve/artifact/streams.py builds both). A message that cannot be scored is
answered with `{"error": {"code", "message"}, "message": the message's text}`, so nothing sent is
lost without a trace; the codes are those the stream route answers for the same mistake.

The messages taken together are scored in one onnxruntime run, in the order they came: a series'
readings reach its window and its alarm in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from aeserve.artifact.alarms import AlarmPolicy
from aeserve.artifact.rows import RowError, check_rows, decode_rows
from aeserve.artifact.streams import SERIES_NAME_RULE, SeriesStore, is_series_name, runnable
from aeserve.batch.model import LoadedModel

#: Most readings in one message (the server's stream route takes AESERVE_MAX_ROWS a request).
MAX_READINGS = 10_000
#: Characters of a refused message quoted in its error answer.
QUOTED_CHARS = 4096


class MessageError(ValueError):
    """A message that cannot be scored; `code` names the problem, as the server's errors do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Readings:
    """One message's series, readings ([n, d] float32) and optional id."""

    series: str | int
    rows: np.ndarray
    id: str | int | None = None


def parse_message(payload: bytes, features: list[str]) -> Readings:
    """A message's readings, checked as the server's stream route checks a series' rows (the
    same codes: aeserve/artifact/rows.py reads the rows for both), or MessageError."""
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MessageError("malformed_json", f"the message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise MessageError("missing_instances",
                           'a message is a JSON object {"series": ..., "rows": [...]}')
    unknown = sorted(set(message) - {"series", "rows", "row", "id"})
    if unknown:
        raise MessageError("invalid_parameter", f"unknown keys {unknown}; known: series, rows, "
                                                "row, id")
    if ("rows" in message) == ("row" in message) or "series" not in message:
        raise MessageError("missing_instances", 'a message holds "series" and either "rows" or '
                                                'one "row"')
    for name, value, code in (("series", message["series"], "invalid_instances"),
                              ("id", message.get("id"), "invalid_ids")):
        if name == "id" and value is None:
            continue
        if not is_series_name(value):  # an id follows the rule of series names
            raise MessageError(code, f'"{name}" must be {SERIES_NAME_RULE}')
    rows = message["rows"] if "rows" in message else [message["row"]]
    try:
        matrix = decode_rows(rows, features, MAX_READINGS, field="rows")
        check_rows(matrix, MAX_READINGS)
    except RowError as error:
        raise MessageError(error.code, error.message) from None
    return Readings(message["series"], matrix, message.get("id"))


def error_answer(error: MessageError, payload: bytes) -> dict[str, Any]:
    """What a refused message is answered with: the problem and the message itself."""
    return {"error": {"code": error.code, "message": str(error)},
            "message": payload[:QUOTED_CHARS].decode("utf-8", "replace")}


class StreamScorer:
    """One model version's scoring of messages, with its series state (aeserve/artifact/
    streams.py): at most `max_series` series, idle ones dropped after `idle_s` seconds."""

    def __init__(self, model: LoadedModel, policy: AlarmPolicy, *, max_series: int,
                 idle_s: float) -> None:
        card = model.card
        self.name, self.version, self.card = model.entry.name, model.entry.version, card
        self.session = model.entry.session
        self.size = card.window_size
        self.features = card.reading_features
        self.store = SeriesStore(self.size, len(self.features), policy, max_series=max_series,
                                 idle_s=idle_s)

    def score(self, payloads: list[bytes]) -> list[dict[str, Any]]:
        """One answer per message, in order (module docstring)."""
        parsed: list[Readings | MessageError] = []
        for payload in payloads:
            try:
                parsed.append(parse_message(payload, self.features))
            except MessageError as error:
                parsed.append(error)
        # A message whose scores are not finite is refused, its series forgotten, and the batch
        # cut again without it: its readings must not reach its series' window, nor the windows
        # of later messages.
        while True:
            valid = [i for i, p in enumerate(parsed) if isinstance(p, Readings)]
            cut = self.store.cut([(str(parsed[i].series), parsed[i].rows) for i in valid])
            windows = [c.windows for c in cut if len(c.windows)]
            joined = np.concatenate(windows) if windows else np.empty((0, 0), dtype=np.float32)
            scores = (self.session.run(runnable(joined), ("score",))["score"][:len(joined)]
                      if len(joined) else np.empty(0, dtype=np.float32))
            mine, start = {}, 0
            for i, c in zip(valid, cut, strict=True):
                mine[i] = (c, scores[start:start + len(c.windows)])
                start += len(c.windows)
            refused = [i for i in valid if not np.isfinite(mine[i][1]).all()]
            if not refused:
                break
            for i in refused:
                self.store.forget(str(parsed[i].series))  # SeriesStore.forget says why
                parsed[i] = MessageError(
                    "non_finite_result", "the readings are too large for the model's float32 "
                                         "arithmetic: their scores are not finite")
        answers = []
        for i, (payload, p) in enumerate(zip(payloads, parsed, strict=True)):
            if isinstance(p, MessageError):
                answers.append(error_answer(p, payload))
                continue
            c, scored = mine[i]
            answers.append({"model": self.name, "version": self.version, "series": p.series,
                            **({"id": p.id} if p.id is not None else {}),
                            "threshold": self.card.threshold,
                            **self.store.answer(str(p.series), c, scored, self.card.threshold)})
        return answers
