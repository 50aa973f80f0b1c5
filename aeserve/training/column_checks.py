"""Columns that are probably not features, found before a model learns from them.

A labelled CSV trained without `--label-column` used to publish a model that takes the label as a
feature; a pandas index written to CSV became a feature named ''; a two-row file trained and
published. Each is legal data, and each silently makes a worse model. `suspect_columns` names
them; `aeserve train` refuses to go on until the user says what they are (`--label-column`,
`--id-column`, `--drop-columns`) or that they are meant (`--allow-suspect-columns`).
"""

from __future__ import annotations

import re

import numpy as np

from aeserve.training.data import Dataset
from aeserve.training.spill import row_chunks

#: Names (lower case, underscores and spaces alike) that labels go by.
LABEL_NAMES = re.compile(r"^(y|label|labels|target|class|is_?anomaly|anomaly|anomalous|outlier|"
                         r"is_?outlier|fraud|is_?fraud|ground_?truth)$")
#: Names that row numbers and ids go by; an empty name is what pandas writes for its index.
INDEX_NAMES = re.compile(r"^(|index|idx|id|row|row_?id|row_?number|unnamed:?_?\d*)$")

#: Fewer normal rows than this cannot calibrate a threshold or fill the cross-fitting folds:
#: training refuses them.
MIN_TRAINING_ROWS = 10


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


#: Rows per chunk of the one pass over the data that profiles its columns.
_CHUNK_ROWS = 65_536


def column_profile(X: np.ndarray) -> dict[str, np.ndarray]:
    """Per column, in one pass over row chunks (bounded memory, sequential reads of a spilled
    matrix): `binary` (only 0 and 1), `counts_rows` (equal to the row number, from 0 or from 1)
    and `constant` (one value throughout)."""
    width = X.shape[1]
    binary, from_zero, from_one = (np.ones(width, dtype=bool) for _ in range(3))
    constant = np.ones(width, dtype=bool)
    first = np.asarray(X[0]) if len(X) else np.zeros(width)
    for start, stop, part in row_chunks(X, size=_CHUNK_ROWS):
        chunk = np.asarray(part, dtype=np.float64)
        numbers = np.arange(start, stop, dtype=np.float64)[:, None]
        binary &= ((chunk == 0.0) | (chunk == 1.0)).all(axis=0)
        from_zero &= (chunk == numbers).all(axis=0)
        from_one &= (chunk == numbers + 1).all(axis=0)
        constant &= (chunk == first).all(axis=0)
    return {"binary": binary, "counts_rows": (from_zero | from_one) & (len(X) > 2),
            "constant": constant & (len(X) > 0)}


def suspect_columns(data: Dataset, profile: dict[str, np.ndarray] | None = None) -> list[str]:
    """One sentence per feature column that looks like a label or a row index."""
    profile = profile or column_profile(data.X)
    problems = []
    for j, name in enumerate(data.feature_names):
        binary = bool(profile["binary"][j])
        if LABEL_NAMES.match(_key(name)) or (binary and re.search(r"label|anomal|outlier",
                                                                   _key(name))):
            shape = "0/1 values, " if binary else ""
            problems.append(f"column {name!r} looks like a label ({shape}named like one): name "
                            f"it with --label-column {name!r}, or leave it out with "
                            f"--drop-columns {name!r}")
        elif INDEX_NAMES.match(_key(name)) or profile["counts_rows"][j]:
            problems.append(f"column {name!r} looks like a row index or id (named like one, or "
                            f"counting the rows): name it with --id-column {name!r}, or leave it "
                            f"out with --drop-columns {name!r}")
    return problems


def constant_columns(data: Dataset, profile: dict[str, np.ndarray] | None = None) -> list[str]:
    """Feature columns with one value throughout: harmless, but they carry nothing."""
    profile = profile or column_profile(data.X)
    return [name for j, name in enumerate(data.feature_names) if profile["constant"][j]]
