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


def suspect_columns(data: Dataset) -> list[str]:
    """One sentence per feature column that looks like a label or a row index."""
    problems = []
    rows = np.arange(len(data.X), dtype=np.float64)
    for j, name in enumerate(data.feature_names):
        values = data.X[:, j]
        binary = np.isin(values, (0.0, 1.0)).all()
        if LABEL_NAMES.match(_key(name)) or (binary and re.search(r"label|anomal|outlier",
                                                                   _key(name))):
            shape = "0/1 values, " if binary else ""
            problems.append(f"column {name!r} looks like a label ({shape}named like one): name "
                            f"it with --label-column {name!r}, or leave it out with "
                            f"--drop-columns {name!r}")
        elif INDEX_NAMES.match(_key(name)) or (len(values) > 2 and (
                np.array_equal(values, rows) or np.array_equal(values, rows + 1))):
            problems.append(f"column {name!r} looks like a row index or id (named like one, or "
                            f"counting the rows): name it with --id-column {name!r}, or leave it "
                            f"out with --drop-columns {name!r}")
    return problems


def constant_columns(data: Dataset) -> list[str]:
    """Feature columns with one value throughout: harmless, but they carry nothing."""
    return [name for j, name in enumerate(data.feature_names)
            if len(data.X) and np.all(data.X[:, j] == data.X[0, j])]
