"""Drift windows and the PSI, by hand, without a server."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aeserve.artifact.drift import ALERT_LEVEL, bin_edges, bin_indices, psi, shares
from aeserve.serving.drift import DriftMonitor, DriftSettings, Window
from tests.helpers import wait_for


def test_bins_are_counted_against_deciles_and_ties_leave_a_bin_empty():
    values = np.arange(100, dtype=np.float64)[:, None]  # 0..99: deciles at 9, 19, ..., 89
    edges = bin_edges(values)
    assert edges.tolist() == [[9.0, 19.0, 29.0, 39.0, 49.0, 59.0, 69.0, 79.0, 89.0]]
    # 9 rows below 9, then 10 per bin from each edge on, 11 at or above 89
    assert (shares(values, edges)[0] * 100).round().tolist() == [9, 10, 10, 10, 10, 10, 10, 10,
                                                                 10, 11]
    assert bin_indices(np.array([8.9, 9.0, 1e9, -1e9]), edges)[:, 0].tolist() == [0, 1, 9, 0]
    tied = np.array([0.0] * 50 + list(range(1, 51)), dtype=np.float64)[:, None]
    tied_edges = bin_edges(tied)
    assert tied_edges[0, :5].tolist() == [0.0] * 5  # the first half is one value
    assert shares(tied, tied_edges)[0, 1:5].tolist() == [0.0] * 4


def test_psi_by_hand():
    expected = np.full((1, 10), 0.1)
    assert psi(np.full((1, 10), 7), expected)[0] == 0.0
    counts = np.array([[20, 0, 10, 10, 10, 10, 10, 10, 10, 10]])  # one bin's rows moved
    by_hand = (0.2 - 0.1) * math.log(2.0) + (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert psi(counts, expected)[0] == pytest.approx(by_hand)
    assert math.isnan(psi(np.zeros((1, 10)), expected)[0])


def test_a_window_forgets_its_oldest_rows():
    window = Window(capacity=4, columns=1)
    window.add(np.array([[0], [1], [2]], dtype=np.uint8))
    assert window.counts[0, :4].tolist() == [1, 1, 1, 0] and window.rows == 3
    window.add(np.array([[3], [3]], dtype=np.uint8))  # the first row (bin 0) leaves
    assert window.counts[0, :4].tolist() == [0, 1, 1, 2] and window.rows == 4
    window.add(np.array([[5]] * 9, dtype=np.uint8))  # more than it holds: the last 4 stay
    assert window.counts[0].tolist() == [0, 0, 0, 0, 0, 4, 0, 0, 0, 0]


def test_a_shifted_feature_is_reported_first(trained, normal_rows):
    card = trained.card
    published = []
    monitor = DriftMonitor(card, DriftSettings(window_rows=1000, sample_rows=64),
                           publish=published.append)
    shifted = np.tile(normal_rows, (6, 1))
    shifted[:, 2] += normal_rows[:, 2].std()
    observed = 0
    for start in range(0, len(shifted), 100):  # batches of 100 rows: every 2nd row observed
        batch = shifted[start:start + 100]
        monitor.observe(batch, np.zeros(len(batch)))
        observed += len(batch[::2])
    report = monitor.report()
    assert observed > 1000 and report["window"]["rows"] == 1000
    assert published == [monitor]  # once a second at most...
    wait_for(lambda: len(published) == 2, timeout=5)  # ...and once more after the last batch
    monitor.close()  # the version stops serving: nothing is published for it any more
    monitor.observe(shifted[:100], np.zeros(100))
    monitor.flush()
    assert len(published) == 2
    first, *others = report["features"]
    assert first["name"] == card.feature_names[2] and first["psi"] > 0.5 and first["drifted"]
    assert all(f["psi"] < 0.1 and not f["drifted"] for f in others)
    assert report["alert_level"] == ALERT_LEVEL
    # Every score 0 sits in the lowest bin: the score drifted, and no row is above threshold.
    assert report["score"]["drifted"] and report["anomaly_rate"]["window"] == 0.0
    assert 0.005 < report["anomaly_rate"]["expected"] < 0.02  # quantile:0.99's 1 %


def test_small_batches_are_binned_together_in_order_and_every_read_sees_them(trained,
                                                                             normal_rows):
    from aeserve.serving import drift

    card = trained.card
    monitor = DriftMonitor(card, DriftSettings(window_rows=300, sample_rows=64))
    rows = np.tile(normal_rows, (8, 1))[:drift.ABSORB_ROWS + 500]
    scores = np.linspace(0, 2 * card.threshold, len(rows))
    for i in range(len(rows)):  # one-row batches: binned once ABSORB_ROWS wait
        monitor.observe(rows[i:i + 1], scores[i:i + 1])
    assert monitor._waiting_rows == 500  # the last ones wait...
    features, score_counts, held, scored, anomalies = monitor.counts()  # ...until a read
    assert monitor._waiting_rows == 0 and held == scored == 300
    last = slice(len(rows) - 300, None)  # the window: the last 300 rows, in order
    expected = np.stack([np.bincount(bin_indices(rows[last], monitor.feature_edges)[:, j],
                                     minlength=10) for j in range(card.input_dim)])
    assert np.array_equal(features, expected)
    assert anomalies == int(np.count_nonzero(scores[last] > card.threshold))
    assert score_counts.sum() == 300


def test_float32_rows_bin_exactly_as_in_float64_at_every_edge():
    edges = np.sort(np.random.default_rng(4).normal(size=(3, 9)), axis=1)
    near = []
    for edge in edges.ravel():  # the float32 values next to each edge, and on it
        nearest = np.float32(edge)
        near += [np.nextafter(nearest, np.float32(-np.inf)), nearest,
                 np.nextafter(nearest, np.float32(np.inf))]
    rows = np.tile(np.array(near, dtype=np.float32)[:, None], (1, 3))
    assert np.array_equal(bin_indices(rows, edges), bin_indices(rows.astype(np.float64), edges))
