"""Drift of one served version: where its recent rows and scores fall in its card's reference
bins, over a sliding window, and their PSI against the reference (aeserve/artifact/drift.py).

Each merged batch hands its rows (at most `sample_rows` of them, evenly spaced) and their scores to
`DriftMonitor.observe`, in the batch's worker thread, which copies them aside; once `ABSORB_ROWS`
wait (or the windows are read) they are binned together: a comparison per value and bin edge, and
a ring buffer of one byte per row and column. Binning many small batches at once keeps a one-row
batch's cost to a copy and an append; the memory is `window_rows` x (features + 1) bytes and at
most `ABSORB_ROWS` waiting rows. The window holds the last `window_rows` rows observed; scores
are windowed apart (an `/encode` request brings rows but no score).

For /metrics, each window's per-bin counts are published (at most once a second per version, and
a second after the last batch at the latest, by a timer, so an idle worker's gauges catch up) as
gauges that add up across workers, with the reference's shares beside them: the PSI over every
worker's rows is then a PromQL expression (deploy/prometheus/alerts.yml records it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aeserve.artifact.card import ModelCard
from aeserve.artifact.drift import ALERT_LEVEL, DRIFT_BINS, bin_counts, bin_indices, psi
from aeserve.artifact.scores import p_values

#: Seconds between two publications of a version's window to the metrics.
PUBLISH_INTERVAL_S = 1.0
#: Observed rows binned together (or sooner, when the windows are read).
ABSORB_ROWS = 1024


class Window:
    """The bins of the last `capacity` rows of some columns: a ring of one byte per value, and
    the counts it holds, kept up to date as rows come and go."""

    def __init__(self, capacity: int, columns: int) -> None:
        self.capacity = capacity
        self.ring = np.zeros((capacity, columns), dtype=np.uint8)
        self.counts = np.zeros((columns, DRIFT_BINS), dtype=np.int64)
        self.rows = 0  # rows held, up to capacity
        self._next = 0  # where the next row goes

    def add(self, bins: np.ndarray) -> None:
        bins = bins[-self.capacity:]
        k = len(bins)
        if k == 0:
            return
        positions = (self._next + np.arange(k)) % self.capacity
        if self.rows + k > self.capacity:  # the oldest rows leave
            leaving = positions[:self.rows + k - self.capacity]
            self.counts -= bin_counts(self.ring[leaving])
        self.ring[positions] = bins
        self.counts += bin_counts(bins)
        self.rows = min(self.capacity, self.rows + k)
        self._next = int((self._next + k) % self.capacity)


@dataclass(frozen=True)
class DriftSettings:
    window_rows: int
    sample_rows: int


class DriftMonitor:
    """The sliding windows of one version, against its card's reference."""

    def __init__(self, card: ModelCard, settings: DriftSettings,
                 publish: Callable[[DriftMonitor], None] | None = None) -> None:
        reference = card.reference
        if reference is None:
            raise ValueError("the card has no drift reference (schema version 1)")
        self.card = card
        self.settings = settings
        self.feature_edges = np.array([b.edges for b in reference.features], dtype=np.float64)
        self.feature_expected = np.array([b.shares for b in reference.features])
        self.score_edges = np.array([reference.score.edges], dtype=np.float64)
        self.score_expected = np.array([reference.score.shares])
        #: The share of normal rows above the threshold in force, by the card's own scores.
        self.expected_anomaly_rate = float(p_values(np.array([card.threshold]),
                                                    card.score_quantiles)[0])
        self.features = Window(settings.window_rows, card.input_dim)
        self.scores = Window(settings.window_rows, 1)
        self.anomalies = np.zeros(settings.window_rows, dtype=bool)  # beside the score window
        self._lock = threading.Lock()
        self._waiting: list[tuple[np.ndarray, np.ndarray | None]] = []  # observed, not binned
        self._waiting_rows = 0
        self._absorbing = threading.Lock()
        self._publish = publish
        self._published = 0.0
        self._publishing = threading.Lock()
        self._timer: threading.Timer | None = None

    def observe(self, rows: np.ndarray, scores: np.ndarray | None) -> None:
        """Queue a batch's sampled rows (and their scores, if it has them) for the windows.

        Binning costs the same few dozen numpy calls for one row as for a thousand, so the rows
        of many small batches are binned together: once `ABSORB_ROWS` rows wait, and before
        anything reads the windows (publication, reports). A batch then pays a copy of its
        sample and an append.
        """
        step = max(1, -(-len(rows) // self.settings.sample_rows))
        sample = np.ascontiguousarray(rows[::step])
        sampled_scores = None
        if scores is not None:
            sampled_scores = np.array(scores[::step], dtype=np.float64)
        with self._lock:
            self._waiting.append((sample, sampled_scores))
            self._waiting_rows += len(sample)
            full = self._waiting_rows >= ABSORB_ROWS
        if full:
            self._absorb()
        if self._publish is None:
            return
        wait = self._published + PUBLISH_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self.flush()
        elif self._timer is None:  # the rows seen until then are published when it fires
            with self._publishing:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self.flush)
                    self._timer.daemon = True
                    self._timer.start()

    def close(self) -> None:
        """The version stops serving: publish nothing more (its gauges are zeroed by the
        metrics, and a late timer or in-flight batch must not bring them back)."""
        with self._publishing:
            self._publish = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def flush(self) -> None:
        """Publish the windows now (the batch's thread, or the trailing timer's)."""
        with self._publishing:
            self._timer = None
            self._published = time.monotonic()
            if self._publish is not None:
                self._publish(self)

    def _absorb(self) -> None:
        """Bin the waiting rows into the windows, in the order they were observed."""
        with self._absorbing:  # one at a time, so that batches enter in order
            with self._lock:
                waiting, self._waiting, self._waiting_rows = self._waiting, [], 0
            if not waiting:
                return
            rows = waiting[0][0] if len(waiting) == 1 else np.concatenate(
                [sample for sample, _ in waiting])
            feature_bins = bin_indices(rows, self.feature_edges)
            scored = [s for _, s in waiting if s is not None]
            if scored:
                scores = scored[0] if len(scored) == 1 else np.concatenate(scored)
                score_bins = bin_indices(scores, self.score_edges)
                flagged = scores > self.card.threshold
            with self._lock:
                self.features.add(feature_bins)
                if scored:
                    at = (self.scores._next + np.arange(len(score_bins))) % self.scores.capacity
                    self.anomalies[at[-self.scores.capacity:]] = flagged[-self.scores.capacity:]
                    self.scores.add(score_bins)

    def counts(self) -> tuple[np.ndarray, np.ndarray, int, int, int]:
        """(feature counts, score counts, feature rows, score rows, anomalies), consistent."""
        self._absorb()
        with self._lock:
            held = self.scores.rows
            # the ring fills from its start, so its first `held` places are the rows held
            return (self.features.counts.copy(), self.scores.counts.copy(), self.features.rows,
                    held, int(np.count_nonzero(self.anomalies[:held])))

    def report(self) -> dict:
        """The window, each feature's PSI (worst first), the score's, and the anomaly rate."""
        features, scores, rows, scored, anomalies = self.counts()
        feature_psi = psi(features, self.feature_expected) if rows else np.full(
            len(features), np.nan)
        order = np.argsort(-np.nan_to_num(feature_psi, nan=-1.0), kind="stable")
        score_psi = float(psi(scores, self.score_expected)[0]) if scored else None
        return {
            "window": {"rows": rows, "scored_rows": scored,
                       "capacity": self.settings.window_rows,
                       "sampled_per_batch": self.settings.sample_rows},
            "statistic": "psi",
            "alert_level": ALERT_LEVEL,
            "features": [{"name": self.card.feature_names[j],
                          "psi": None if np.isnan(feature_psi[j]) else float(feature_psi[j]),
                          "drifted": bool(feature_psi[j] >= ALERT_LEVEL)}
                         for j in order.tolist()],
            "score": {"psi": score_psi,
                      "drifted": score_psi is not None and score_psi >= ALERT_LEVEL},
            "anomaly_rate": {"window": anomalies / scored if scored else None,
                             "expected": self.expected_anomaly_rate,
                             "threshold": self.card.threshold},
        }
