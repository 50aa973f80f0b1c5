"""Shadow versions: a candidate version scores a share of a model's live traffic beside the
active one, so that its alarms can be compared with the active version's before it is promoted.

`config.json`'s `{"shadow": {"version": 3, "fraction": 0.1}}` (serving/policy.py) loads version
3 beside the active version without making it active. After a request's rows have been scored by
the active version, a `fraction` share of requests (drawn per request) is handed to `Shadow`:
the answer goes back to the client at once, and a task on the event loop submits the same rows
to the shadow version's own batcher (merged with other shadow rows, run in the worker threads)
and counts, row by row, how the two verdicts compare, each at its version's threshold in force:

    both_normal, both_anomaly       the versions agree
    new_alarm                       the shadow flags a row that the active version does not
    lost_alarm                      the active version flags a row that the shadow does not

Counts are Prometheus counters (`aeserve_shadow_rows_total`), so they add up across workers;
`GET /models/{name}/shadow` reads them back. At most `MAX_PENDING_ROWS` rows wait for the shadow
at once: beyond that a request's rows are not shadowed and are counted as skipped, so a slow
shadow never holds memory or delays the active version's answers. The shadow's runs also feed
its own metrics (score histogram, anomaly counts) and its drift window.
"""

from __future__ import annotations

import asyncio
import logging
import random

import numpy as np

from aeserve.artifact.scores import verdicts
from aeserve.serving.metrics import Metrics
from aeserve.serving.repository import ModelRepository, ModelVersion

log = logging.getLogger("aeserve.shadow")

#: Rows waiting for the shadow version (per worker) beyond which requests are not shadowed.
MAX_PENDING_ROWS = 65_536

OUTCOMES = ("both_normal", "both_anomaly", "new_alarm", "lost_alarm")


def compare_verdicts(active: np.ndarray, shadow: np.ndarray) -> dict[str, int]:
    """How many rows fall in each outcome, from the two versions' verdicts on the same rows."""
    active, shadow = np.asarray(active, dtype=bool), np.asarray(shadow, dtype=bool)
    return {"both_normal": int(np.count_nonzero(~active & ~shadow)),
            "both_anomaly": int(np.count_nonzero(active & shadow)),
            "new_alarm": int(np.count_nonzero(~active & shadow)),
            "lost_alarm": int(np.count_nonzero(active & ~shadow))}


class Shadow:
    """Hands sampled requests' rows to their model's shadow version, off the request path."""

    def __init__(self, repository: ModelRepository, metrics: Metrics,
                 rng: random.Random | None = None) -> None:
        self.repository = repository
        self.metrics = metrics
        self.pending_rows = 0
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task] = set()

    def offer(self, entry: ModelVersion, rows: np.ndarray, active_flags: np.ndarray) -> None:
        """After `entry` (the active version) scored `rows`: shadow them, if sampled."""
        model = self.repository.models.get(entry.name)
        if model is None or model.active is not entry:
            return  # a pinned older version, or a table swapped meanwhile
        shadow, setting = model.shadow, model.shadow_setting
        if shadow is None or setting is None:
            return
        if setting.fraction < 1.0 and self._rng.random() >= setting.fraction:
            return
        if self.pending_rows + len(rows) > MAX_PENDING_ROWS:
            self.metrics.shadow_skipped(entry.name, shadow.version, len(rows))
            return
        self.pending_rows += len(rows)
        task = asyncio.get_running_loop().create_task(
            self._compare(entry, shadow, rows, np.asarray(active_flags, dtype=bool)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(self, active: ModelVersion, shadow: ModelVersion, rows: np.ndarray,
                       active_flags: np.ndarray) -> None:
        try:
            outputs = await shadow.batcher.submit(rows, ("score",))
            scores = outputs["score"]
            finite = np.isfinite(scores)
            counts = compare_verdicts(active_flags[finite],
                                      verdicts(scores[finite], shadow.card.threshold))
            self.metrics.shadow_compared(active.name, active.version, shadow.version, counts)
            if not finite.all():
                self.metrics.shadow_skipped(active.name, shadow.version,
                                            int(np.count_nonzero(~finite)))
        except Exception:  # the shadow unloaded mid-flight, or failed: never the answer's
            log.warning("model %s: shadow version %s could not score %d rows", active.name,
                        shadow.version, len(rows), exc_info=True)
            self.metrics.shadow_skipped(active.name, shadow.version, len(rows))
        finally:
            self.pending_rows -= len(rows)

    async def drain(self) -> None:
        """Wait for the comparisons in flight (shutdown, and tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def shadow_report(model_name: str, active: int, shadow: int, fraction: float, state: str,
                  counts: dict[str, int], skipped: int) -> dict:
    """`GET /models/{name}/shadow`'s answer, from the (all-worker) counters."""
    compared = sum(counts.get(o, 0) for o in OUTCOMES)
    active_alarms = counts.get("both_anomaly", 0) + counts.get("lost_alarm", 0)
    shadow_alarms = counts.get("both_anomaly", 0) + counts.get("new_alarm", 0)
    return {
        "model": model_name, "active_version": active, "shadow_version": shadow,
        "fraction": fraction, "shadow_state": state,
        "rows_compared": compared, "rows_skipped": skipped,
        "outcomes": {o: counts.get(o, 0) for o in OUTCOMES},
        "agreement": (counts.get("both_normal", 0) + counts.get("both_anomaly", 0)) / compared
        if compared else None,
        "anomaly_rate": {"active": active_alarms / compared if compared else None,
                         "shadow": shadow_alarms / compared if compared else None},
    }
