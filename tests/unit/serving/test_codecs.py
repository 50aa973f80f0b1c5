"""Request decoding: the fast path's result, and each bad input's typed error."""

import io
import json

import numpy as np
import orjson
import pytest

from aeserve.serving import codecs, errors
from aeserve.serving.codecs import decode_instances

NAMES = ["a", "b", "c"]


def decode(body, content_type="application/json", max_rows=100):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return decode_instances(body, content_type, NAMES, max_rows)


def test_row_arrays_take_the_fast_path(monkeypatch):
    def no_fallback(*_args):
        raise AssertionError("fell back to the general decoder")

    monkeypatch.setattr(codecs, "_decode_json_general", no_fallback)
    rows = decode({"instances": [[1, 2.5, -3e2], [0, 0, 1e-3]]})
    assert rows.dtype == np.float32 and rows.flags.c_contiguous
    np.testing.assert_allclose(rows, [[1.0, 2.5, -300.0], [0.0, 0.0, 0.001]], rtol=1e-7)


def test_large_body_matches_orjson():
    X = np.random.default_rng(0).normal(size=(512, 3))
    body = orjson.dumps({"instances": X.tolist()})
    assert np.array_equal(decode(body, max_rows=1000), X.astype(np.float32))


def test_named_features_in_any_order():
    rows = decode({"instances": [{"c": 3, "a": 1, "b": 2}, {"b": 5, "c": 6, "a": 4}]})
    assert rows.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_missing_content_type_is_json():
    assert decode(b'{"instances": [[1, 2, 3]]}', content_type=None).shape == (1, 3)
    assert decode(b'{"instances": [[1, 2, 3]]}', "application/json; charset=utf-8").shape == (1, 3)


@pytest.mark.parametrize(
    ("body", "error", "fragment"),
    [
        ({"instances": [[1, 2]]}, errors.WrongWidth, "expects 3"),
        ({"instances": [[1, 2, 3], [4]]}, errors.RaggedRows, "row 1 has 1"),
        ({"instances": [[1, 2, 3, 4], [5, 6]]}, errors.RaggedRows, "different lengths"),
        ({"instances": [[1, "x", 3]]}, errors.NonNumeric, "row 0, column 1: 'x'"),
        ({"instances": [[1, True, 3]]}, errors.NonNumeric, "True"),
        ({"instances": [[1, None, 3]]}, errors.NonNumeric, "None"),
        ({"instances": [[1, [2], 3]]}, errors.NonNumeric, r"\[2\]"),
        ({"instances": [[[], [1, 2], 3]]}, errors.NonNumeric, "column 0"),
        ({"instances": []}, errors.EmptyInstances, "empty"),
        ({"rows": [[1, 2, 3]]}, errors.MissingInstances, "instances"),
        ({"instances": {"a": 1}}, errors.InvalidInstances, "list of rows"),
        ({"instances": [1, 2, 3]}, errors.InvalidInstances, "row 0 is a int"),
        ({"instances": [{"a": 1, "b": 2}]}, errors.FeatureMismatch, r"missing: \['c'\]"),
        ({"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, errors.FeatureMismatch, "unknown"),
        ({"instances": [{"a": 1, "b": "2", "c": 3}]}, errors.NonNumeric, "feature 'b'"),
        ({"instances": [[1, 2, 3]] * 101}, errors.TooManyRows, "101 rows exceed the limit of 100"),
    ],
)
def test_bad_json_bodies(body, error, fragment):
    with pytest.raises(error, match=fragment) as caught:
        decode(body)
    assert 400 <= caught.value.status < 500
    assert caught.value.body()["error"]["code"] == error.code


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_literals_are_named(literal):
    with pytest.raises(errors.NonFinite, match="row 0, column 1"):
        decode(b'{"instances": [[1, ' + literal + b", 3]]}")


def test_values_beyond_float32_are_non_finite():
    with pytest.raises(errors.NonFinite, match="float32"):
        decode({"instances": [[1, 1e39, 3]]})


@pytest.mark.parametrize("body", [b'{"instances": [[1, 2, 3]]', b"", b"\xff\xfe", b"[1, 2"])
def test_malformed_json(body):
    with pytest.raises(errors.MalformedJSON, match="not valid JSON"):
        decode(body)


def test_unsupported_media_type():
    with pytest.raises(errors.UnsupportedMediaType, match="text/csv"):
        decode(b"1,2,3", content_type="text/csv")


def test_float32_binary_rows():
    X = np.arange(6, dtype="<f4").reshape(2, 3)
    assert decode(X.tobytes(), codecs.BINARY_TYPE).tolist() == X.tolist()
    with pytest.raises(errors.WrongWidth, match="whole number of rows"):
        decode(X.tobytes()[:-4], codecs.BINARY_TYPE)
    with pytest.raises(errors.NonFinite):
        decode(np.array([[1, np.nan, 3]], dtype="<f4").tobytes(), codecs.BINARY_TYPE)


def test_npy_arrays():
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6, dtype=np.float64).reshape(2, 3))
    assert decode(buffer.getvalue(), codecs.NPY_TYPE).dtype == np.float32
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 4)))
    with pytest.raises(errors.WrongWidth):
        decode(buffer.getvalue(), codecs.NPY_TYPE)
    with pytest.raises(errors.MalformedJSON, match="npy"):
        decode(b"not an array", codecs.NPY_TYPE)


def test_numpy_payloads_serialise():
    out = orjson.loads(codecs.dumps({"s": np.array([0.5], dtype=np.float32),
                                     "flag": np.array([True])}))
    assert out == {"s": [0.5], "flag": [True]}


@pytest.mark.parametrize("rows", [[[1.0] * 500], [[1.0] * 6, [1.0] * 5]])
def test_a_refused_body_is_not_kept_alive_by_its_error(rows):
    """The shape errors come from the parsed document (no orjson pass over a huge row), and the
    error does not keep the body alive through a reference cycle until a full collection."""
    import gc
    import sys

    payload = orjson.dumps({"instances": rows})
    base = sys.getrefcount(payload)
    gc.disable()
    try:
        with pytest.raises((errors.WrongWidth, errors.RaggedRows)):
            decode_instances(payload, "application/json", [f"f{i}" for i in range(6)], 100)
        assert sys.getrefcount(payload) == base
    finally:
        gc.enable()


def test_shape_errors_name_the_same_problem_either_way():
    from aeserve.serving.codecs import _decode_json_general

    names = [f"f{i}" for i in range(6)]
    for rows in ([[1.0] * 7], [[1.0] * 6, [1.0] * 5, [1.0] * 6]):
        payload = orjson.dumps({"instances": rows})
        with pytest.raises(errors.InvalidInstances) as fast:
            decode_instances(payload, "application/json", names, 100)
        with pytest.raises(errors.InvalidInstances) as general:
            _decode_json_general(payload, names, 100)
        assert type(fast.value) is type(general.value)
        assert fast.value.body() == general.value.body()


def test_ragged_rows_that_add_up_to_the_right_size_are_refused():
    payload = orjson.dumps({"instances": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0, 8.0]]})
    with pytest.raises(errors.RaggedRows, match="row 1 has 5"):
        decode_instances(payload, "application/json", ["a", "b", "c", "d"], 100)


def test_ids_ride_the_fast_path_and_come_back_as_sent(monkeypatch):
    def no_fallback(*_args):
        raise AssertionError("fell back to the general decoder")

    monkeypatch.setattr(codecs, "_decode_json_general", no_fallback)
    body = orjson.dumps({"ids": ["x", 7], "instances": [[1, 2, 3], [4, 5, 6]]})
    rows, ids = codecs.decode_request(body, "application/json", NAMES, 100)
    assert ids == ["x", 7] and rows.shape == (2, 3)
    assert codecs.decode_request(orjson.dumps({"instances": [[1, 2, 3]]}), "application/json",
                                 NAMES, 100)[1] is None


def test_ids_of_named_rows_and_ids_holding_brackets_take_the_general_decoder():
    named = orjson.dumps({"instances": [{"a": 1, "b": 2, "c": 3}], "ids": ["n"]})
    assert codecs.decode_request(named, "application/json", NAMES, 100)[1] == ["n"]
    bracket = orjson.dumps({"instances": [[1, 2, 3]], "ids": ["[odd]"]})
    rows, ids = codecs.decode_request(bracket, "application/json", NAMES, 100)
    assert ids == ["[odd]"] and rows.tolist() == [[1, 2, 3]]


@pytest.mark.parametrize(("ids", "says"), [
    (["a"], "1 ids for 2 rows"), ("ab", "must be a list"), (None, "must be a list"),
    (["a", True], "id 1 is True"), (["a", 1.5], "id 1 is 1.5"), (["a", ["b"]], "id 1"),
    (["a", {"b": 1}], "id 1"), (["a", "x" * 257], "longer than 256"),
])
def test_bad_ids_are_a_typed_422(ids, says):
    body = orjson.dumps({"instances": [[1, 2, 3], [4, 5, 6]], "ids": ids})
    with pytest.raises(errors.InvalidIds, match=says.replace("[", r"\[")):
        codecs.decode_request(body, "application/json", NAMES, 100)


@pytest.mark.parametrize("escape", [rb"\ud800", rb"\udfff", rb"a\ud83d"])
def test_an_id_holding_a_lone_surrogate_is_a_typed_422(escape):
    """Valid JSON, a Python str, but no UTF-8 encoding: the log, the feedback join and every
    header would refuse it later, far from this request."""
    body = b'{"instances": [[1, 2, 3], [4, 5, 6]], "ids": ["a", "' + escape + b'"]}'
    with pytest.raises(errors.InvalidIds, match="id 1 is not valid Unicode text"):
        codecs.decode_request(body, "application/json", NAMES, 100)
    paired = b'{"instances": [[1, 2, 3], [4, 5, 6]], "ids": ["a", "\\ud83d\\ude00"]}'
    assert codecs.decode_request(paired, "application/json", NAMES, 100)[1] == ["a", "\U0001F600"]
