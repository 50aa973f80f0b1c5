"""Non-finite outputs are marked once per merged batch and refused per request: a request is
refused for its own rows and the outputs it asked for, never for a neighbour's."""

from __future__ import annotations

import numpy as np
import pytest

from aeserve.serving.dataplane import NON_FINITE, mark_non_finite, require_finite
from aeserve.serving.errors import NonFiniteResult


def batch() -> dict[str, np.ndarray]:
    """Four rows: row 1's score overflowed, row 3's embedding and score both did."""
    embedding = np.ones((4, 2), dtype=np.float32)
    embedding[3, 1] = np.inf
    score = np.array([0.5, np.inf, 0.7, np.nan], dtype=np.float32)
    return {"embedding": embedding, "score": score}


def slice_rows(outputs: dict[str, np.ndarray], start: int, end: int) -> dict[str, np.ndarray]:
    return {name: values[start:end] for name, values in outputs.items()}  # as the batcher does


def test_a_finite_batch_is_left_alone():
    outputs = {"score": np.array([0.1, 0.2], dtype=np.float32)}
    assert mark_non_finite(outputs) is outputs
    require_finite(outputs, ["score"])


def test_each_request_is_refused_for_its_own_rows_and_outputs():
    marked = mark_non_finite(batch())
    assert marked[NON_FINITE].tolist() == [[False, False], [False, True], [False, False],
                                           [True, True]]
    require_finite(slice_rows(marked, 0, 1), ["score"])  # row 0: fine
    require_finite(slice_rows(marked, 2, 3), ["embedding", "score"])  # row 2: fine
    require_finite(slice_rows(marked, 1, 2), ["embedding"])  # row 1's embedding is finite
    with pytest.raises(NonFiniteResult, match=r"non-finite score \(first: \[0\]\)"):
        require_finite(slice_rows(marked, 1, 3), ["score"])
    with pytest.raises(NonFiniteResult, match=r"non-finite score \(first: \[1\]\)") as caught:
        require_finite(slice_rows(marked, 2, 4), ["score"])
    assert caught.value.detail == {"rows": [1], "output": "score"}
    with pytest.raises(NonFiniteResult, match="non-finite embedding"):
        require_finite(slice_rows(marked, 3, 4), ["embedding", "score"])
