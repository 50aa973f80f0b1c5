"""The artifact's percentiles (`aeserve.artifact.scores.percentiles`), bit for bit, about twice
as fast.

The server's function finds each score's place among the card's 101 quantiles with
`np.searchsorted`, a binary search with an unpredictable branch per level: about 35 ns a score, as
much as the whole onnxruntime run of a small model. A batch job scores millions of rows, so here
the search is branchless and vectorised: seven passes of
`idx += (table[idx + step - 1] <= s) * step` over the batch, on a table of the quantiles padded
with NaN (never <= anything) to 128 entries.

The comparisons are in float32, the scores' own type, against each quantile rounded *up* to
float32: for a float32 score s, `q <= s` exactly when `ceil32(q) <= s`, so the positions equal
the float64 search's. The interpolation between quantiles is the server's arithmetic, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aeserve.artifact.scores import percentiles as reference_percentiles

_TABLE_SIZE = 128  # a power of two above the 101 quantiles
_STEPS = (64, 32, 16, 8, 4, 2, 1)


def ceil_float32(values: np.ndarray) -> np.ndarray:
    """The smallest float32 at or above each float64 value."""
    with np.errstate(over="ignore"):  # beyond float32's range: +inf, above every float32
        rounded = values.astype(np.float32)
    below = rounded.astype(np.float64) < values
    rounded[below] = np.nextafter(rounded[below], np.float32(np.inf))
    return rounded


class Percentiles:
    """`Percentiles(card.score_quantiles)(scores)` equals `percentiles(scores, quantiles)`."""

    def __init__(self, quantiles: Sequence[float]) -> None:
        self.q = np.asarray(quantiles, dtype=np.float64)
        n = len(self.q)
        self.fast = 0 < n < _TABLE_SIZE and bool(np.isfinite(self.q).all())
        if self.fast:
            self.table = np.full(_TABLE_SIZE, np.nan, dtype=np.float32)  # never <= a score
            self.table[:n] = ceil_float32(self.q)
            # q[upper - 1] and q[upper] with the server's clipping at both ends, by one gather.
            self.lower = np.concatenate([self.q[:1], self.q])
            self.upper = np.concatenate([self.q, self.q[-1:]])

    def positions(self, scores: np.ndarray) -> np.ndarray:
        """How many quantiles are <= each score: `searchsorted(q, scores, side="right")`."""
        idx = np.zeros(len(scores), dtype=np.intp)
        for step in _STEPS:
            idx += (self.table[idx + (step - 1)] <= scores) * step
        idx[np.isnan(scores)] = len(self.q)  # NaN sorts last in searchsorted
        return idx

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores)
        if not self.fast or scores.dtype != np.float32 or scores.ndim != 1:
            return reference_percentiles(scores, self.q)
        n = len(self.q)
        upper = self.positions(scores)
        s = scores.astype(np.float64)
        lo, hi = self.lower[upper], self.upper[upper]
        inside = (upper > 0) & (upper < n)
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.where(inside, (s - lo) / (hi - lo), 0.0)
        result = np.where(upper == 0, 0.0, np.where(upper >= n, 100.0, upper - 1 + fraction))
        return result * (100.0 / (n - 1))
