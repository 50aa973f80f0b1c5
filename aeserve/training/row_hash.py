"""Folds and holdout chosen by a seeded hash of each row's values, not by its position.

Workers of a data-parallel run (`--engine ray`) read shards of the data in an order they do not
choose and never see a row's number; what they see is the row. Hashing its float32 bits with the
seed gives every process the same fold for the same row, with no shared state, and a row that
occurs twice lands in one fold (never trained on by the member that scores it).
"""

from __future__ import annotations

import numpy as np

_PRIME = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime
_OFFSET = np.uint64(0xCBF29CE484222325)


def row_hashes(X: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit FNV-1a hash of each row's float32 bits, mixed with `seed`."""
    bits = np.ascontiguousarray(X, dtype=np.float32).view(np.uint32)
    with np.errstate(over="ignore"):
        hashes = np.full(len(bits), _OFFSET ^ np.uint64(seed & 0xFFFFFFFF), dtype=np.uint64)
        for j in range(bits.shape[1]):
            hashes = (hashes ^ bits[:, j].astype(np.uint64)) * _PRIME
        # A final avalanche (splitmix64's), so that the low bits depend on every feature.
        hashes ^= hashes >> np.uint64(31)
        hashes *= np.uint64(0x94D049BB133111EB)
        hashes ^= hashes >> np.uint64(29)
    return hashes


def folds_of(hashes: np.ndarray, folds: int) -> np.ndarray:
    """Each hashed row's fold, 0..folds-1."""
    return (hashes % np.uint64(folds)).astype(np.int64)


def below(hashes: np.ndarray, fraction: float) -> np.ndarray:
    """Whether each hash, as a number in [0, 1), is below `fraction` (the row is held out)."""
    return (hashes >> np.uint64(11)).astype(np.float64) / 2.0**53 < fraction


def row_folds(X: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each row's fold, 0..folds-1, from its hash."""
    return folds_of(row_hashes(X, seed), folds)


def row_held_out(X: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whether each row is held out: its hash, as a number in [0, 1), below `fraction`."""
    return below(row_hashes(X, seed), fraction)
