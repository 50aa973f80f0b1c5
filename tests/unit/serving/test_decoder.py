"""The JSON decoder process: the same matrices and the same typed errors as the worker's own."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import orjson
import pytest

from aeserve.serving import codecs
from aeserve.serving.codecs import decode_instances
from aeserve.serving.decoder import DecoderProcess
from aeserve.serving.errors import NonFinite, TooManyRows, WrongWidth

NAMES = [f"f{i}" for i in range(6)]


@pytest.fixture(scope="module")
def decoder():
    process = DecoderProcess(min_bytes=1)
    yield process
    process.shutdown()


def body(rows: np.ndarray) -> bytes:
    return orjson.dumps({"instances": rows.tolist()})


def decode(decoder: DecoderProcess, payload: bytes, max_rows: int = 100_000) -> np.ndarray:
    """The helper's matrix, or, where it declines, the worker's own decoding (as BodyDecoder)."""
    decoded = asyncio.run(decoder.matrix(payload, len(NAMES), max_rows))
    return decoded[0] if decoded is not None else decode_instances(
        payload, "application/json", NAMES, max_rows)


def test_the_same_matrix_as_the_worker_decodes(decoder):
    rows = np.random.default_rng(0).normal(size=(3000, 6))
    payload = body(rows)
    np.testing.assert_array_equal(decode(decoder, payload),
                                  decode_instances(payload, "application/json", NAMES, 100_000))
    bigger = np.random.default_rng(1).normal(size=(30_000, 6))  # outgrows the first segments
    np.testing.assert_array_equal(decode(decoder, body(bigger)), bigger.astype(np.float32))


@pytest.mark.parametrize(("payload", "error"), [
    (b'{"instances": [[1, 2, 3, 4, 5, NaN]]}', NonFinite),
    (body(np.ones((2, 5))), WrongWidth),
    (body(np.ones((20, 6))), TooManyRows),
])
def test_refusals_are_the_workers_typed_errors(decoder, payload, error):
    with pytest.raises(error):
        decode(decoder, payload, max_rows=10)


def test_a_dead_helper_is_replaced(decoder):
    rows = np.random.default_rng(2).normal(size=(50, 6))
    decode(decoder, body(rows))
    os.kill(decoder._process.pid, signal.SIGKILL)
    decoder._process.join(timeout=5)
    # The request that finds it dead is decoded by the worker; the next starts a new helper.
    for _ in range(2):
        np.testing.assert_array_equal(decode(decoder, body(rows)), rows.astype(np.float32))
    assert decoder._process is not None and decoder._process.is_alive()


def test_which_bodies_go_to_the_helper():
    process = DecoderProcess(min_bytes=100)
    assert process.wants(b"x" * 100, "application/json")
    assert process.wants(b"x" * 100, None)
    assert not process.wants(b"x" * 99, "application/json")
    assert not process.wants(b"x" * 100, "application/octet-stream")
    assert not DecoderProcess(min_bytes=0).wants(b"x" * 10**6, "application/json")


def test_no_room_in_shared_memory_means_the_worker_decodes(monkeypatch):
    import errno

    import aeserve.serving.decoder as decoder_module

    def full(fd: int, offset: int, length: int) -> None:  # /dev/shm filled by someone else
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(decoder_module.os, "posix_fallocate", full)
    process = DecoderProcess(min_bytes=1)
    try:
        rows = np.random.default_rng(3).normal(size=(40, 6))
        assert asyncio.run(process.matrix(body(rows), 6, 100)) is None  # declined, not SIGBUS
        np.testing.assert_array_equal(decode(process, body(rows)), rows.astype(np.float32))
        assert process._segments is None  # nothing was written to a full /dev/shm
    finally:
        process.shutdown()


def test_segments_are_reserved_when_made():
    from aeserve.serving.decoder import _reserved_segment

    segment = _reserved_segment(1 << 20)
    try:
        # every page is taken now: the file's blocks cover its size (a sparse one has none)
        assert os.fstat(segment._fd).st_blocks * 512 >= 1 << 20
    finally:
        segment.close()
        segment.unlink()


def test_bodies_beyond_the_segment_cap_stay_in_the_worker():
    from aeserve.serving.decoder import MAX_BODY_BYTES

    process = DecoderProcess(min_bytes=1)
    assert process.wants(b"x" * MAX_BODY_BYTES, "application/json")
    assert not process.wants(b"x" * (MAX_BODY_BYTES + 1), "application/json")


def test_a_stuck_helper_is_killed_and_the_worker_decodes(monkeypatch):
    import aeserve.serving.decoder as decoder_module

    process = DecoderProcess(min_bytes=1)
    try:
        rows = np.random.default_rng(4).normal(size=(30, 6))
        decode(process, body(rows))  # starts the helper
        stuck = process._process
        os.kill(stuck.pid, signal.SIGSTOP)
        monkeypatch.setattr(decoder_module, "REPLY_TIMEOUT_S", 0.5)
        np.testing.assert_array_equal(decode(process, body(rows)), rows.astype(np.float32))
        stuck.join(timeout=5)
        assert not stuck.is_alive() and process._process is None
    finally:
        process.shutdown()


def test_v2_requests_split_in_the_helper_as_in_the_worker(decoder):
    from aeserve.serving.v2_codec import split_json

    values = np.random.default_rng(2).normal(size=(2000, 6))
    payload = orjson.dumps({"inputs": [{"name": "x", "shape": [2000, 6], "datatype": "FP64",
                                        "data": values.ravel().tolist()}]})
    envelope, rows = asyncio.run(decoder.split_v2(payload))
    expected_envelope, expected_rows = split_json(payload)
    assert orjson.loads(envelope) == orjson.loads(expected_envelope)
    np.testing.assert_array_equal(rows, expected_rows)
    nested = orjson.dumps({"inputs": [{"name": "x", "shape": [2000, 6], "datatype": "FP64",
                                       "data": values.tolist()}]})
    assert asyncio.run(decoder.split_v2(nested)) is None  # declined: decoded in the worker


def test_ids_come_back_from_the_helper_unchecked(decoder):
    rows = np.random.default_rng(2).normal(size=(50, 6))
    payload = orjson.dumps({"instances": rows.tolist(), "ids": list(range(50))})
    matrix, ids = asyncio.run(decoder.matrix(payload, len(NAMES), 100))
    np.testing.assert_array_equal(matrix, rows.astype(np.float32))
    assert ids == list(range(50))
    _, absent = asyncio.run(decoder.matrix(body(rows), len(NAMES), 100))
    assert absent is codecs.ABSENT
