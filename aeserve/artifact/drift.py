"""What drift means: the reference bins a card carries, and the population stability index (PSI)
of recent rows against them.

Training cuts each feature's normal rows, and the held-out normal scores, into `DRIFT_BINS` bins
at their deciles and records each bin's share (`Reference` in the card). Serving counts where
recent rows fall in the same bins. PSI = sum over bins of (a - e) ln(a / e), a the recent share
and e the reference's, each floored at `SHARE_FLOOR`: 0 for the same distribution, about 0.1 for
a moderate shift and 0.25 for a large one, by the usual reading (a feature shifted by one of its
standard deviations scores about 0.95). Why PSI: it reads a whole distribution, not its mean; it
needs only counts, so windows add up across server workers; and the monitoring tools that
operators already read (NannyML, Evidently, banking's model-risk rules) use it with these levels.
Under no drift a window of n rows still scores about (bins - 1) / n: 0.001 for 10,000 rows.

Pure numpy: the training side computes the reference, the serving side the window, with the same
`bin_indices`.
"""

from __future__ import annotations

import numpy as np

#: Bins per feature: deciles of the reference rows.
DRIFT_BINS = 10
#: Shares below this count as this in the PSI, so that an empty bin gives a large, finite term.
SHARE_FLOOR = 1e-4
#: The PSI from which a feature (or the score) is reported as drifted: the usual "large shift".
ALERT_LEVEL = 0.25


def bin_edges(values: np.ndarray) -> np.ndarray:
    """[columns, DRIFT_BINS - 1] inner edges: each column's deciles, taken among its own values
    (so a column with ties repeats an edge, and the bin between repeated edges stays empty on
    both sides). A column at a time: a quantile sorts a float64 copy of what it is given."""
    levels = np.arange(1, DRIFT_BINS) / DRIFT_BINS
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    return np.array([np.quantile(np.asarray(values[:, j], dtype=np.float64), levels,
                                 method="inverted_cdf") for j in range(values.shape[1])]
                    ).reshape(values.shape[1], DRIFT_BINS - 1)


def bin_indices(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """[rows, columns] bin of each value (uint8): the number of its column's edges at or below
    it, so bin 0 is below the first decile and bin DRIFT_BINS - 1 at or above the last."""
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    edges = np.asarray(edges, dtype=np.float64)
    if values.dtype == np.float32:  # served rows: compared in float32, 2.4x faster, same bins
        edges = float32_at_or_above(edges)
    # One comparison of the whole block per edge: a [rows, columns, edges] array summed over
    # its short last axis costs ten times as much, on the serving path.
    bins = np.zeros(values.shape, dtype=np.uint8)
    for edge in edges.T:
        bins += values >= edge
    return bins


def float32_at_or_above(edges: np.ndarray) -> np.ndarray:
    """Each edge as the smallest float32 at or above it: a float32 value is at or above that
    exactly when it is at or above the float64 edge, so float32 rows bin as in float64."""
    rounded = edges.astype(np.float32)
    below = rounded.astype(np.float64) < edges
    rounded[below] = np.nextafter(rounded[below], np.float32(np.inf))
    return rounded


def bin_counts(bins: np.ndarray, n_bins: int = DRIFT_BINS) -> np.ndarray:
    """[columns, n_bins] how many values of each column fall in each bin."""
    columns = bins.shape[1]
    flat = bins.astype(np.int64) + np.arange(columns) * n_bins
    return np.bincount(flat.ravel(), minlength=columns * n_bins).reshape(columns, n_bins)


def shares(values: np.ndarray, edges: np.ndarray, chunk_rows: int = 8192) -> np.ndarray:
    """[columns, DRIFT_BINS] share of the values in each bin (counted `chunk_rows` rows at a
    time: the comparisons of a whole data set at once would take rows x columns x bins bytes)."""
    values = np.asarray(values)
    counts = np.zeros((edges.shape[0], DRIFT_BINS), dtype=np.int64)
    for start in range(0, len(values), chunk_rows):
        counts += bin_counts(bin_indices(values[start:start + chunk_rows], edges))
    return counts / max(1, len(values))


def psi(counts: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """The PSI of each row of `counts` ([columns, bins], recent rows) against `expected`
    ([columns, bins], the reference's shares); NaN for a column with no rows yet."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        actual = np.maximum(counts / total, SHARE_FLOOR)
    reference = np.maximum(np.asarray(expected, dtype=np.float64), SHARE_FLOOR)
    return ((actual - reference) * np.log(actual / reference)).sum(axis=-1)
