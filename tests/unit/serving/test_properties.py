"""Properties of the decoders over generated bodies (Hypothesis): whatever arrives, a decoder
returns a finite float32 matrix of the model's width or raises one of the typed errors, never
anything else; and the three transports of the same rows decode to the same matrix."""

from __future__ import annotations

import io
import json

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aeserve.serving.codecs import decode_instances
from aeserve.serving.errors import ServiceError
from aeserve.serving.v2_codec import decode_request, split_json

WIDTH = 3
NAMES = ["a", "b", "c"]
MAX_ROWS = 50
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(min_value=-10**400, max_value=10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                           | st.dictionaries(st.sampled_from([*NAMES, "x", "instances"]), inner,
                                             max_size=4), max_leaves=40)
rowish = st.lists(st.lists(st.floats(width=64, allow_nan=False) | st.integers(-10**6, 10**6),
                           min_size=0, max_size=5), min_size=0, max_size=8)


def check_matrix(rows: np.ndarray) -> None:
    assert rows.dtype == np.float32 and rows.ndim == 2 and rows.shape[1] == WIDTH
    assert 1 <= len(rows) <= MAX_ROWS and np.isfinite(rows).all()


def decode_or_refuse(body: bytes, content_type: str) -> None:
    try:
        rows = decode_instances(body, content_type, NAMES, MAX_ROWS)
    except ServiceError:
        return
    check_matrix(rows)


@SETTINGS
@given(st.one_of(json_values, st.fixed_dictionaries({"instances": json_values}),
                 st.fixed_dictionaries({"instances": rowish})))
def test_any_json_decodes_to_a_finite_matrix_or_a_typed_error(payload):
    # Python's json writes what orjson cannot: integers beyond 64 bits, NaN and Infinity
    decode_or_refuse(json.dumps(payload).encode(), "application/json")


@SETTINGS
@given(st.binary(max_size=400), st.sampled_from(["application/json", "application/x-npy",
                                                  "application/octet-stream"]))
def test_any_bytes_decode_or_are_refused(body, content_type):
    decode_or_refuse(body, content_type)


@SETTINGS
@given(arrays(np.float32, st.tuples(st.integers(1, 20), st.just(WIDTH)),
              elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_json_float32_and_npy_transports_agree(rows):
    as_json = decode_instances(orjson.dumps({"instances": rows.astype(np.float64).tolist()}),
                               "application/json", NAMES, MAX_ROWS)
    as_binary = decode_instances(rows.astype("<f4").tobytes(), "application/octet-stream", NAMES,
                                 MAX_ROWS)
    buffer = io.BytesIO()
    np.save(buffer, rows)
    as_npy = decode_instances(buffer.getvalue(), "application/x-npy", NAMES, MAX_ROWS)
    np.testing.assert_array_equal(as_json, rows)
    np.testing.assert_array_equal(as_binary, rows)
    np.testing.assert_array_equal(as_npy, rows)


@SETTINGS
@given(st.fixed_dictionaries(
    {"inputs": st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(["x", "y"]), "shape": st.lists(st.integers(-1, 4), max_size=3),
        "datatype": st.sampled_from(["FP32", "FP64", "INT8", "BYTES"]),
        "data": json_values}), max_size=2)},
    optional={"outputs": st.lists(st.fixed_dictionaries(
        {"name": st.sampled_from(["score", "embedding", "logits"])}), max_size=2),
        "id": st.text(max_size=4), "parameters": json_values}))
def test_any_v2_request_decodes_or_is_refused_alike_both_ways(payload):
    if _has_big(payload):
        return  # orjson cannot write integers beyond 64 bits; the JSON tests above cover them
    body = orjson.dumps(payload)
    outcome = []
    for presplit in (None, split_json(body)):
        if presplit is None and outcome:
            continue  # not split: only the full parse applies
        try:
            request = decode_request(body, None, WIDTH, MAX_ROWS, presplit)
        except ServiceError as error:
            outcome.append((type(error), str(error)))
            continue
        check_matrix(request.rows)
        outcome.append(request.rows.tobytes())
    assert len(set(map(str, outcome))) == 1, outcome


def _has_big(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, float):
        return not np.isfinite(value)
    if isinstance(value, list):
        return any(_has_big(v) for v in value)
    if isinstance(value, dict):
        return any(_has_big(v) for v in value.values())
    return False
