"""The card's drift reference: each feature's decile bins over the normal training rows, and the
held-out normal scores' (aeserve/artifact/drift.py says what they mean).

Beyond `sample_rows` normal rows (`MAX_VALUES` values over the features, at least `MIN_ROWS`), a
seeded sample of them: a decile's share estimated from 16,384 rows (32 features) has a standard
error of 0.0023 (sqrt(0.1 x 0.9 / n)), which moves a PSI by about 0.0005, and memory stays that
sample's (2 MiB as float32) whatever the data's size.
"""

from __future__ import annotations

import numpy as np

from aeserve.artifact.card import Bins, Reference
from aeserve.artifact.drift import bin_edges, shares
from aeserve.training.spill import row_chunks

#: Values (rows x features) in the sample the reference is taken from.
MAX_VALUES = 2**19
#: Rows in the sample however wide the data.
MIN_ROWS = 10_000


def sample_rows(n_features: int) -> int:
    """How many normal rows the reference is taken from, at most."""
    return max(MIN_ROWS, MAX_VALUES // max(1, n_features))


def drift_reference(X: np.ndarray, normal: np.ndarray, held_out_scores: np.ndarray,
                    seed: int) -> Reference:
    """The reference of the rows of `X` numbered `normal`, and of the held-out scores."""
    rows = np.asarray(normal)
    limit = sample_rows(X.shape[1])
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    sample = np.empty((len(rows), X.shape[1]), dtype=np.float32)
    for start, stop, part in row_chunks(X, rows):
        sample[start:stop] = part
    edges = bin_edges(sample)
    feature_shares = shares(sample, edges)
    scores = np.asarray(held_out_scores, dtype=np.float64)[:, None]
    score_edges = bin_edges(scores)
    return Reference(
        rows=len(rows),
        features=[Bins(edges=e.tolist(), shares=_exact(s)) for e, s in zip(
            edges, feature_shares, strict=True)],
        score=Bins(edges=score_edges[0].tolist(), shares=_exact(shares(scores, score_edges)[0])))


def _exact(share: np.ndarray) -> list[float]:
    """Shares as floats that add up to 1 within the card's tolerance, whatever the rounding."""
    return [float(v) for v in share / share.sum()]
