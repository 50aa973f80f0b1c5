"""The Open Inference Protocol codec: the fast split of a large JSON request gives the same
request, rows and typed errors as a full parse, and declines whatever it cannot prove clean."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from aeserve.serving.errors import InvalidInstances, NonFinite, NonNumeric, WrongWidth
from aeserve.serving.v2_codec import decode_request, split_json

WIDTH = 4


def request(data, shape=(3, WIDTH), datatype="FP32", **extra) -> bytes:
    return orjson.dumps({"id": "r-1", "inputs": [{"name": "x", "shape": list(shape),
                                                  "datatype": datatype, "data": data}],
                         "outputs": [{"name": "score"}], **extra})


def both(body: bytes, max_rows: int = 100):
    """(full parse, split then decoded): the two ways a body can be decoded."""
    split = split_json(body)
    assert split is not None
    return (decode_request(body, None, WIDTH, max_rows),
            decode_request(body, None, WIDTH, max_rows, split))


def test_a_flat_tensor_splits_into_the_same_request_and_rows():
    values = np.random.default_rng(0).normal(size=(3, WIDTH))
    full, fast = both(request(values.ravel().tolist(), parameters={"tag": [1, 2]}))
    np.testing.assert_array_equal(full.rows, fast.rows)
    assert fast.rows.dtype == np.float32 and fast.rows.shape == (3, WIDTH)
    assert fast.request.id == "r-1" and fast.request.parameters == {"tag": [1, 2]}
    assert fast.wanted == full.wanted == [("score", False)]
    envelope, _ = split_json(request(values.ravel().tolist()))
    assert b"\"data\"" not in envelope  # the numbers never become Python objects


@pytest.mark.parametrize("data", [
    [[1.0, 2.0, 3.0, 4.0]] * 3,                 # nested: parsed in full
    [1.0, [2.0], 3.0] + [0.0] * 9,              # mixed nesting with the right count
    [1.0, "2", 3.0] + [0.0] * 9,                # a string
    [True] * 12,                                # booleans
])
def test_anything_but_a_flat_list_of_numbers_is_declined(data):
    assert split_json(request(data)) is None


def test_bodies_that_are_not_one_input_are_declined():
    assert split_json(b"[1, 2]") is None
    assert split_json(b'{"inputs": []}') is None
    assert split_json(b'{"inputs": [{"name": "x", "data": 3}]}') is None
    assert split_json(b"not json") is None


@pytest.mark.parametrize(("body", "error"), [
    (request([1.0] * 12, shape=(3, 5)), WrongWidth),
    (request([1.0] * 12, datatype="INT8"), NonNumeric),
    (request([1.0] * 11 + [1e39]), NonFinite),
    (request([1.0] * 9), InvalidInstances),
])
def test_the_same_typed_errors_either_way(body, error):
    with pytest.raises(error) as full:
        decode_request(body, None, WIDTH, 100)
    with pytest.raises(error) as fast:
        decode_request(body, None, WIDTH, 100, split_json(body))
    assert str(full.value) == str(fast.value)
