"""A regression corpus of hostile requests: each gets its pinned 4xx and a typed JSON error, never a
5xx, and the server serves normally afterwards. `aeserve serve` on the shipped model.

Every body type is covered (JSON instances, named features, raw float32, .npy, V2 JSON), with
truncation, wrong types, non-finite literals, extreme numbers, nesting, encodings, wrong media
types and sizes, hostile query parameters and names; and HTTP-level vectors over a raw socket.
"""

from __future__ import annotations

import io
import json
import socket
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from tests.helpers import ROOT, address, read_response, server_process

WIDTH = 30
ROW = [1.0] * WIDTH
JSON, OCTET, NPY = "application/json", "application/octet-stream", "application/x-npy"


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str
    body: bytes
    content_type: str
    status: int
    method: str = "POST"


def instances(value: object) -> bytes:
    return json.dumps({"instances": value}).encode()


CORPUS = [
    # JSON instances
    Hostile("empty body", "/anomaly-score", b"", JSON, 400),
    Hostile("truncated", "/anomaly-score", b'{"instances": [[1, 2', JSON, 400),
    Hostile("not an object", "/anomaly-score", b"[[1, 2, 3]]", JSON, 422),
    Hostile("no instances", "/anomaly-score", b'{"rows": [[1]]}', JSON, 422),
    Hostile("instances null", "/anomaly-score", instances(None), JSON, 422),
    Hostile("instances a number", "/anomaly-score", instances(3), JSON, 422),
    Hostile("no rows", "/anomaly-score", instances([]), JSON, 422),
    Hostile("empty row", "/anomaly-score", instances([[]]), JSON, 422),
    Hostile("ragged rows", "/anomaly-score", instances([ROW, ROW[:-1]]), JSON, 422),
    Hostile("wrong width", "/anomaly-score", instances([[*ROW, 1.0]]), JSON, 422),
    Hostile("strings", "/anomaly-score", instances([["1"] * WIDTH]), JSON, 422),
    Hostile("booleans", "/anomaly-score", instances([[True] * WIDTH]), JSON, 422),
    Hostile("nulls", "/anomaly-score", instances([[None] * WIDTH]), JSON, 422),
    Hostile("nested rows", "/anomaly-score", instances([[ROW]]), JSON, 422),
    Hostile("NaN literal", "/anomaly-score",
            b'{"instances": [[NaN' + b", 1" * (WIDTH - 1) + b"]]}", JSON, 422),
    Hostile("Infinity literal", "/anomaly-score",
            b'{"instances": [[Infinity' + b", 1" * (WIDTH - 1) + b"]]}", JSON, 422),
    Hostile("1e999", "/anomaly-score",
            b'{"instances": [[1e999' + b", 1" * (WIDTH - 1) + b"]]}", JSON, 422),
    Hostile("beyond float32", "/anomaly-score", instances([[1e39, *ROW[1:]]]), JSON, 422),
    Hostile("overflowing score", "/anomaly-score", instances([[3e38] * WIDTH]), JSON, 422),
    Hostile("400-digit integer", "/anomaly-score",
            b'{"instances": [[' + b"9" * 400 + b", 1" * (WIDTH - 1) + b"]]}", JSON, 422),
    Hostile("5000-digit integer", "/anomaly-score",
            b'{"instances": [[' + b"9" * 5000 + b", 1" * (WIDTH - 1) + b"]]}", JSON, 400),
    Hostile("deep nesting", "/anomaly-score",
            b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", JSON, 400),
    Hostile("deep object", "/anomaly-score", b'{"a":' * 3000 + b"1" + b"}" * 3000, JSON, 400),
    Hostile("nul bytes", "/anomaly-score", b'{"instances": [[1\x00]]}', JSON, 400),
    Hostile("latin-1 bytes", "/anomaly-score", b'{"instances": [["\xe9"]]}', JSON, 400),
    # JSON in UTF-16 with its byte-order mark is read as such (as Python's json module does)
    Hostile("utf-16", "/anomaly-score", instances([ROW]).decode().encode("utf-16"), JSON, 200),
    Hostile("trailing garbage", "/anomaly-score", instances([ROW]) + b"xyz", JSON, 400),
    Hostile("duplicate keys", "/anomaly-score",
            b'{"instances": [[1]], "instances": [[2]]}', JSON, 422),
    # named features
    Hostile("unknown feature", "/anomaly-score", instances([{"nope": 1.0}]), JSON, 422),
    Hostile("named and positional", "/anomaly-score", instances([ROW, {"nope": 1}]), JSON, 422),
    Hostile("named NaN", "/anomaly-score", b'{"instances": [{"mean radius": NaN}]}', JSON, 422),
    # raw float32
    Hostile("float32 not a whole row", "/anomaly-score", b"\x00" * (4 * WIDTH + 4), OCTET, 422),
    Hostile("float32 odd length", "/anomaly-score", b"\x00" * 7, OCTET, 422),
    Hostile("float32 empty", "/anomaly-score", b"", OCTET, 422),
    Hostile("float32 NaN", "/anomaly-score",
            np.full(WIDTH, np.nan, dtype="<f4").tobytes(), OCTET, 422),
    # .npy
    Hostile("npy garbage", "/anomaly-score", b"\x93NUMPY garbage", NPY, 400),
    Hostile("npy pickled objects", "/anomaly-score",
            b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1, 30), }"
            + b" " * 42 + b"\n" + b"\x80\x04N.", NPY, 400),
    Hostile("npy huge shape", "/anomaly-score",
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
            b"'shape': (100000000000, 30), }" + b" " * 27 + b"\n", NPY, 400),
    Hostile("npy 3-D", "/anomaly-score", npy(np.zeros((1, 1, WIDTH))), NPY, 422),
    Hostile("npy strings", "/anomaly-score", npy(np.array([["a"] * WIDTH])), NPY, 422),
    Hostile("npy wrong width", "/anomaly-score", npy(np.zeros((2, 3))), NPY, 422),
    Hostile("npz as npy", "/anomaly-score", b"PK\x03\x04" + b"\x00" * 40, NPY, 400),
    # media types and methods
    Hostile("text/plain", "/anomaly-score", instances([ROW]), "text/plain", 415),
    Hostile("multipart", "/anomaly-score", b"--x\r\n\r\n--x--", "multipart/form-data; b=x", 415),
    Hostile("GET on a POST route", "/anomaly-score", b"", JSON, 405, method="GET"),
    # query parameters
    Hostile("threshold NaN", "/anomaly-score?threshold=nan", instances([ROW]), JSON, 422),
    Hostile("threshold text", "/anomaly-score?threshold=high", instances([ROW]), JSON, 422),
    Hostile("top_k negative", "/anomaly-score?explain=true&top_k=-1", instances([ROW]), JSON,
            422),
    # top_k beyond the features explains every feature
    Hostile("top_k huge", "/anomaly-score?explain=true&top_k=99999999999999999999",
            instances([ROW]), JSON, 200),
    Hostile("explain text", "/anomaly-score?explain=perhaps", instances([ROW]), JSON, 422),
    # names and versions
    Hostile("traversal name", "/models/..%2F..%2Fetc/anomaly-score", instances([ROW]), JSON,
            404),
    Hostile("unicode name", "/models/br%C3%A9ast/anomaly-score", instances([ROW]), JSON, 404),
    Hostile("newline name", "/models/breast-cancer%0A/anomaly-score", instances([ROW]), JSON,
            404),
    Hostile("unicode digit version", "/models/breast-cancer/versions/%C2%B2/anomaly-score",
            instances([ROW]), JSON, 404),
    Hostile("negative version", "/models/breast-cancer/versions/-1/anomaly-score",
            instances([ROW]), JSON, 404),
    Hostile("huge version", "/models/breast-cancer/versions/" + "9" * 400 + "/anomaly-score",
            instances([ROW]), JSON, 404),
    # V2
    Hostile("v2 no inputs", "/v2/models/breast-cancer/infer", b"{}", JSON, 422),
    Hostile("v2 wrong shape", "/v2/models/breast-cancer/infer", json.dumps({"inputs": [
        {"name": "x", "shape": [2, WIDTH], "datatype": "FP32", "data": ROW}]}).encode(), JSON,
        422),
    Hostile("v2 negative shape", "/v2/models/breast-cancer/infer", json.dumps({"inputs": [
        {"name": "x", "shape": [-1, WIDTH], "datatype": "FP32", "data": ROW}]}).encode(), JSON,
        422),
    Hostile("v2 strings", "/v2/models/breast-cancer/infer", json.dumps({"inputs": [
        {"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": ["1"] * WIDTH}]}).encode(),
        JSON, 422),
    Hostile("v2 BYTES", "/v2/models/breast-cancer/infer", json.dumps({"inputs": [
        {"name": "x", "shape": [1, WIDTH], "datatype": "BYTES", "data": ["a"] * WIDTH}]}).encode(),
        JSON, 422),
    Hostile("v2 unknown output", "/v2/models/breast-cancer/infer", json.dumps({
        "inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": ROW}],
        "outputs": [{"name": "secrets"}]}).encode(), JSON, 422),
    # repository routes refuse to run without AESERVE_API_KEY, whatever the body
    Hostile("v2 index body", "/v2/repository/index", b'{"ready": "yes"}', JSON, 403),
]


@pytest.fixture(scope="module")
def server():
    with server_process(ROOT / "models") as running:
        yield running


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_hostile_request_gets_its_typed_4xx(server, case):
    response = httpx.request(case.method, f"{server.url}{case.path}", content=case.body,
                             headers={"content-type": case.content_type}, timeout=30)
    assert response.status_code == case.status, response.text[:300]
    if case.status >= 400:  # a typed error: a code and a message, or V2's one string
        error = response.json()["error"]
        assert error if case.path.startswith("/v2/") else error["code"] and error["message"]


RAW_VECTORS = {
    "content-length and transfer-encoding": (
        b"POST /anomaly-score HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "two content-lengths": (
        b"POST /anomaly-score HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
        b"Content-Length: 5\r\n\r\n{}{}"),
    "negative content-length": (
        b"POST /anomaly-score HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n"),
    "header without a colon": b"GET /healthz HTTP/1.1\r\nHost t\r\n\r\n",
    "CR in a header value": b"GET /healthz HTTP/1.1\r\nHost: t\rX-Evil: 1\r\n\r\n",
    "space before the colon": b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n",
    "garbage request line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(RAW_VECTORS.values()), ids=list(RAW_VECTORS))
def test_malformed_http_gets_a_400_and_no_smuggled_request(server, raw):
    with socket.create_connection(address(server.url), timeout=10) as sock:
        sock.sendall(raw)
        status, _, _ = read_response(sock)
        assert status == 400


def test_the_server_still_serves_after_the_corpus(server):
    body = json.loads((ROOT / "examples" / "breast_cancer_rows.json").read_text())
    response = httpx.post(f"{server.url}/anomaly-score", json=body, timeout=30)
    assert response.status_code == 200 and len(response.json()["scores"]) == 2
