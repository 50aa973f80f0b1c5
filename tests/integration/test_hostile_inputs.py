"""Inputs that once gave a 500 or a `null` score, over real HTTP on the shipped model: each now
gets a typed 4xx that names the problem, and the metrics count only what was really scored."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from aeserve.serving.app import create_app
from aeserve.serving.settings import Settings
from tests.helpers import ROOT, app_on_a_socket

WIDTH = 30  # the shipped breast-cancer model's features
KEY = "hostile-test-key"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    app = create_app(Settings(models_dir=ROOT / "models", poll_interval_s=0, log_format="text",
                              api_key=KEY))
    with app_on_a_socket(app) as url, httpx.Client(base_url=url, timeout=30,
                                                   headers={"X-API-Key": KEY}) as http:
        yield http


def error(response: httpx.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    if code is not None:
        assert body["code"] == code, body
        return body["message"]
    return body  # the V2 shape: {"error": "message"}


def scored_rows(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    found = re.search(r'aeserve_scored_rows_total\{model="breast-cancer",version="1"\} (\S+)',
                      text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("value", [1e20, 3.0e38])
def test_finite_inputs_that_overflow_are_a_422_naming_the_rows(client, value):
    before = scored_rows(client)
    rows = [[1.0] * WIDTH, [value] * WIDTH, [1.0] * WIDTH]
    message = error(client.post("/anomaly-score", json={"instances": rows}), 422,
                    "non_finite_result")
    assert "[1]" in message and "too large" in message
    v2 = client.post("/v2/models/breast-cancer/infer", json={"inputs": [{
        "name": "x", "shape": [3, WIDTH], "datatype": "FP64",
        "data": np.asarray(rows).ravel().tolist()}], "outputs": [{"name": "score"}]})
    assert "non-finite score" in error(v2, 422)
    assert "non_finite_result" in client.post("/anomaly-score?explain=true", json={
        "instances": [[value if i % 2 else -value for i in range(WIDTH)]]}).text
    # the good rows of those requests were scored, the bad ones never: every series stays finite
    assert scored_rows(client) == before + 2 + 2
    assert "nan" not in client.get("/metrics").text.lower().replace("nan_", "")
    assert client.post("/anomaly-score", json={"instances": [[1.0] * WIDTH]}).status_code == 200


def test_unicode_digits_are_no_version_and_no_length(client):
    assert "not a positive integer" in error(
        client.post("/models/breast-cancer/versions/%C2%B2/encode",
                    json={"instances": [[1.0] * WIDTH]}), 404, "unknown_version")
    response = client.post("/v2/models/breast-cancer/infer", content=b"{}",
                           headers=[(b"Inference-Header-Content-Length", b"\xb2")])
    assert "does not fit" in error(response, 400)


@pytest.mark.parametrize(("body", "content_type", "status", "code", "words"), [
    (b'{"instances": ' + b"[" * 3000 + b"]" * 3000 + b"}", "application/json", 400,
     "malformed_json", "nested too deeply"),
    (b'{"instances": [[' + b"1" * 400 + b"," + b"1," * (WIDTH - 2) + b"1]]}",
     "application/json", 422, "non_finite", "400 digits"),
])
def test_deep_and_huge_json_is_refused_by_name(client, body, content_type, status, code, words):
    message = error(client.post("/anomaly-score", content=body,
                                headers={"content-type": content_type}), status, code)
    assert words in message


def test_an_npz_archive_is_not_an_npy_array(client):
    buffer = io.BytesIO()
    np.savez(buffer, a=np.ones((1, WIDTH)))
    message = error(client.post("/anomaly-score", content=buffer.getvalue(),
                                headers={"content-type": "application/x-npy"}), 400,
                    "malformed_json")
    assert ".npz archive" in message


@pytest.mark.parametrize(("data", "words"), [(["1.5"] * WIDTH, "strings"),
                                             ([True] * WIDTH, "booleans"),
                                             ([1.0] * (WIDTH - 1) + [None], "mixed values")])
def test_v2_fp32_holds_numbers_only(client, data, words):
    response = client.post("/v2/models/breast-cancer/infer", json={"inputs": [{
        "name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": data}]})
    assert words in error(response, 422)


def test_v2_big_integers_are_numbers_until_they_overflow(client):
    ok = client.post("/v2/models/breast-cancer/infer", json={"inputs": [{
        "name": "x", "shape": [1, WIDTH], "datatype": "FP64", "data": [2**70] + [0] * (WIDTH - 1)
    }], "outputs": [{"name": "embedding"}]})
    assert ok.status_code == 200, ok.text
    huge = client.post("/v2/models/breast-cancer/infer", content=(
        b'{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": ['
        + b"1" * 400 + b"," + b"0," * (WIDTH - 2) + b"0]}]}"),
        headers={"content-type": "application/json"})
    assert "infinity" in error(huge, 400)  # orjson refuses a number beyond float64, by name


def test_duplicate_instances_keys_are_read_alike_by_both_parsers(client):
    first, last = [[1.0] * WIDTH], [[2.0] * WIDTH]
    body = (b'{"instances": ' + str(first).encode() + b', "instances": '
            + str(last).encode() + b"}")
    answer = client.post("/anomaly-score", content=body,
                         headers={"content-type": "application/json"}).json()
    expected = client.post("/anomaly-score", json={"instances": last}).json()
    assert answer["scores"] == expected["scores"]


def test_a_bad_repository_index_body_is_a_422(client):
    response = client.post("/v2/repository/index", content=b'{"ready": "maybe"}')
    assert "not a repository index request" in error(response, 422)


def test_loading_a_folder_without_versions_says_so(client, tmp_path):
    (ROOT / "models" / "empty-for-test").mkdir()
    try:
        response = client.post("/v2/repository/models/empty-for-test/load")
        assert "no version folders" in error(response, 400)
    finally:
        (ROOT / "models" / "empty-for-test").rmdir()
