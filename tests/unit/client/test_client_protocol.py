"""The client's protocol logic on canned answers: transport fallback, retry delays, error types."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from aeserve.client import Client, InvalidInstances, ModelNotReady, ServerError, UnknownModel
from aeserve.client.errors import APIError, error_for
from aeserve.client.protocol import positional_rows, retry_delay


def json_only_server(requests: list[httpx.Request]) -> httpx.MockTransport:
    """A server that refuses binary bodies with 415 and scores JSON rows (score = row sum)."""

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.headers["content-type"] != "application/json":
            return httpx.Response(415, json={"error": {"code": "unsupported_media_type",
                                                       "message": "JSON only"}})
        rows = json.loads(request.content)["instances"]
        scores = [float(sum(row)) for row in rows]
        return httpx.Response(200, json={
            "model": "m", "version": 2, "scores": scores, "threshold": 5.0,
            "is_anomaly": [s > 5.0 for s in scores], "percentiles": [50.0] * len(rows)})

    return httpx.MockTransport(handle)


def test_a_415_to_binary_switches_the_client_to_json_for_good():
    requests: list[httpx.Request] = []
    http = httpx.Client(base_url="http://test", transport=json_only_server(requests))
    client = Client("http://test", http_client=http)
    first = client.anomaly_score(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert [r.headers["content-type"] for r in requests] == ["application/octet-stream",
                                                             "application/json"]
    np.testing.assert_array_equal(first.scores, [3.0, 7.0])
    np.testing.assert_array_equal(first.is_anomaly, [False, True])
    client.anomaly_score(np.array([[1.0, 2.0]]))
    assert requests[-1].headers["content-type"] == "application/json"
    assert len(requests) == 3


def test_binary_only_client_does_not_fall_back():
    requests: list[httpx.Request] = []
    http = httpx.Client(base_url="http://test", transport=json_only_server(requests))
    with pytest.raises(APIError) as refused:
        Client("http://test", http_client=http, transport="binary").encode([[1.0, 2.0]])
    assert refused.value.status == 415 and len(requests) == 1


def test_retry_after_is_honoured_and_backoff_grows_with_jitter():
    answer = httpx.Response(503, headers={"retry-after": "2"})
    assert retry_delay(0, 0.1, 5.0, answer) == 2.0
    assert retry_delay(0, 0.1, 1.0, httpx.Response(503, headers={"retry-after": "30"})) == 1.0
    for attempt in range(5):
        delay = retry_delay(attempt, 0.1, 1.0)
        cap = min(1.0, 0.1 * 2 ** attempt)
        assert cap / 2 <= delay <= cap


def test_error_types_follow_status_and_code():
    assert isinstance(error_for(404, {"error": {"code": "unknown_model", "message": "x"}}),
                      UnknownModel)
    not_ready = error_for(503, {"error": {"code": "model_not_ready", "message": "no version"}},
                          "req-1")
    assert isinstance(not_ready, ModelNotReady) and isinstance(not_ready, ServerError)
    assert (not_ready.code, not_ready.message, not_ready.request_id) == (
        "model_not_ready", "no version", "req-1")
    wrong = error_for(422, {"error": {"code": "wrong_width", "message": "m", "expected": 6}})
    assert isinstance(wrong, InvalidInstances) and wrong.detail == {"expected": 6}
    v2 = error_for(400, {"error": "bad tensor"})  # the V2 routes' shape
    assert (v2.code, v2.message) == ("http_400", "bad tensor")
    assert isinstance(error_for(502, "<html>bad gateway</html>"), ServerError)


def test_rows_that_are_not_a_numeric_matrix_go_as_json():
    assert positional_rows([[1, 2], [3, 4]]).matrix.dtype == np.float32
    assert positional_rows(np.array([[True, False]])).matrix.tolist() == [[1.0, 0.0]]
    assert positional_rows([[1, 2], [3]]).instances == [[1, 2], [3]]
    assert positional_rows([["1", "2"]]).instances == [["1", "2"]]
    assert positional_rows([1.0, 2.0]).matrix.shape == (1, 2)


def test_a_stream_call_is_not_resent_when_its_connection_breaks_but_a_score_call_is():
    from aeserve.client import ConnectionFailed

    attempts: list[str] = []

    def broken(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ConnectError("connection reset")

    http = httpx.Client(base_url="http://test", transport=httpx.MockTransport(broken))
    client = Client("http://test", http_client=http, retries=2, backoff=0.0)
    with pytest.raises(ConnectionFailed, match="not resent"):
        client.stream("pumps", {"p7": [[1.0, 2.0]]})
    assert attempts == ["/models/pumps/stream"]
    with pytest.raises(ConnectionFailed, match="3 attempt"):
        client.anomaly_score([[1.0, 2.0]], model="pumps")
    assert len(attempts) == 4
