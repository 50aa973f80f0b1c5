"""The JSON decoder process: the same matrices and the same typed errors as the worker's own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

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


def in_helper(decoder: DecoderProcess, payload: bytes) -> np.ndarray:
    """The matrix as the helper decoded it (None would mean the worker has to)."""
    decoded = asyncio.run(decoder.matrix(payload, len(NAMES), 100_000))
    assert decoded is not None, "the helper did not decode the body"
    return decoded[0]


def test_the_same_matrix_as_the_worker_decodes(decoder):
    rows = np.random.default_rng(0).normal(size=(3000, 6))
    payload = body(rows)
    np.testing.assert_array_equal(in_helper(decoder, payload),
                                  decode_instances(payload, "application/json", NAMES, 100_000))
    helper = decoder._process
    bigger = np.random.default_rng(1).normal(size=(30_000, 6))  # outgrows the first segments
    np.testing.assert_array_equal(in_helper(decoder, body(bigger)), bigger.astype(np.float32))
    np.testing.assert_array_equal(in_helper(decoder, payload), rows.astype(np.float32))
    assert decoder._process is helper  # the same helper, attached to the new segments


def test_a_helper_that_cannot_run_is_not_started_per_body(monkeypatch, caplog):
    import aeserve.serving.decoder as decoder_module

    monkeypatch.setattr(decoder_module, "_HELPER_MAIN", "raise SystemExit(3)")
    process = DecoderProcess(min_bytes=1)
    try:
        rows = np.random.default_rng(6).normal(size=(20, 6))
        started = []
        real_start = process._start
        monkeypatch.setattr(process, "_start", lambda: (started.append(1), real_start()))
        for _ in range(6):  # every body is answered, by the worker
            np.testing.assert_array_equal(decode(process, body(rows)), rows.astype(np.float32))
        assert len(started) == decoder_module.MAX_FAILED_STARTS
        assert not process.wants(body(rows), "application/json")
        assert "decodes every body from now on" in caplog.text
    finally:
        process.shutdown()


def test_no_shared_segment_at_all_means_the_worker_decodes(monkeypatch):
    import errno

    import aeserve.serving.decoder as decoder_module

    def no_descriptor(name: str, flags: int = 0) -> int:  # EMFILE: a busy worker's descriptors
        raise OSError(errno.EMFILE, "Too many open files")

    process = DecoderProcess(min_bytes=1)
    try:
        rows = np.random.default_rng(7).normal(size=(20, 6))
        in_helper(process, body(rows))
        helper = process._process
        process._release_segments()
        monkeypatch.setattr(decoder_module.os, "memfd_create", no_descriptor)
        assert asyncio.run(process.matrix(body(rows), 6, 100)) is None  # NoRoom: declined
        assert process._process is helper and process._failures == 0  # not taken for dead
    finally:
        process.shutdown()


def test_the_helper_imports_what_the_worker_imports(tmp_path, monkeypatch):
    """A module in the working directory named like a dependency does not replace it in the
    helper (`python -c` would put the working directory first on its path)."""
    (tmp_path / "orjson.py").write_text("raise ImportError('the wrong orjson')\n")
    monkeypatch.chdir(tmp_path)
    process = DecoderProcess(min_bytes=1)
    try:
        rows = np.random.default_rng(8).normal(size=(20, 6))
        np.testing.assert_array_equal(in_helper(process, body(rows)), rows.astype(np.float32))
    finally:
        process.shutdown()


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
    dead = decoder._process
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait(timeout=5)
    for _ in range(2):
        np.testing.assert_array_equal(decode(decoder, body(rows)), rows.astype(np.float32))
    assert decoder._process is not None and decoder._process is not dead
    assert decoder._process.poll() is None


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

    def full(fd: int, offset: int, length: int) -> None:  # memory taken by someone else
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(decoder_module.os, "posix_fallocate", full)
    process = DecoderProcess(min_bytes=1)
    try:
        rows = np.random.default_rng(3).normal(size=(40, 6))
        assert asyncio.run(process.matrix(body(rows), 6, 100)) is None  # declined, not SIGBUS
        np.testing.assert_array_equal(decode(process, body(rows)), rows.astype(np.float32))
        assert process._segments is None  # nothing was written to memory that is not there
    finally:
        process.shutdown()


def test_segments_are_reserved_when_made():
    from aeserve.serving.decoder import Segment

    segment = Segment(1 << 20)
    try:
        # every page is taken now: the file's blocks cover its size (a sparse one has none)
        assert os.fstat(segment.fd).st_blocks * 512 >= 1 << 20
    finally:
        segment.close()


HELPER_CHILDREN = """
import asyncio, os, pathlib
import numpy as np, orjson
from aeserve.serving.decoder import DecoderProcess
before = set(os.listdir("/dev/shm"))
process = DecoderProcess(min_bytes=1)
rows = np.arange(60.0).reshape(10, 6)
matrix, _ = asyncio.run(process.matrix(orjson.dumps({"instances": rows.tolist()}), 6, 100))
assert (matrix == rows).all()
me = os.getpid()
for pid in pathlib.Path(f"/proc/{me}/task/{me}/children").read_text().split():
    print(pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\\0", b" ").decode())
print("new in /dev/shm:", sorted(set(os.listdir("/dev/shm")) - before))
process.shutdown()
"""


def test_the_helper_is_the_only_child_and_nothing_is_named():
    """No resource tracker beside the helper (13 MB resident that multiprocessing's spawn and
    SharedMemory start), and no named segment in /dev/shm that a killed worker would leave."""
    run = subprocess.run([sys.executable, "-c", HELPER_CHILDREN], capture_output=True,
                         text=True, timeout=60, check=True)
    children, shm = run.stdout.strip().splitlines()[:-1], run.stdout.strip().splitlines()[-1]
    assert len(children) == 1 and "aeserve.serving.decoder import serve" in children[0]
    assert shm == "new in /dev/shm: []"


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
        stuck.wait(timeout=5)
        assert stuck.poll() is not None and process._process is None
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
