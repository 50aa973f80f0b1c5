"""POST /models/{name}/stream over a real socket: windows kept per series across requests,
scores equal to the batch scores of the same windows, alarms, and typed errors."""

from __future__ import annotations

import csv
import json

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from aeserve.artifact.card import ModelCard
from aeserve.artifact.windows import flatten, series_order, window_rows
from tests.helpers import running_server


def readings(path):
    """The CSV's rows by machine in time order: {machine: (X [n, 2], labels)}."""
    with open(path) as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: (r["machine"], r["time"]))
    by_machine: dict[str, list] = {}
    for r in rows:
        by_machine.setdefault(r["machine"], []).append(r)
    return {m: (np.array([[float(r["a"]), float(r["b"])] for r in rs], dtype=np.float32),
                np.array([int(r["label"]) for r in rs])) for m, rs in by_machine.items()}


@pytest.fixture(scope="module")
def server(windowed_model):
    _, version = windowed_model
    with running_server(version.parent.parent, AESERVE_STREAM_MAX_SERIES="5") as url:
        yield url


def test_streamed_scores_equal_batch_scores_of_the_same_windows(windowed_model, server):
    data, version = windowed_model
    series = readings(data)
    # batch: every window of every machine, through onnxruntime in process and /anomaly-score
    session = ort.InferenceSession(str(version / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    expected, over_http = {}, {}
    for machine, (X, _) in series.items():
        windows = flatten(X, window_rows(*series_order(None, None, len(X)), 6))
        expected[machine] = session.run(["score"], {"x": windows})[0]
        answer = httpx.post(f"{server}/models/machines/anomaly-score",
                            json={"instances": windows.tolist()}).json()
        over_http[machine] = np.array(answer["scores"], dtype=np.float32)
    # streamed: the machines interleaved, in chunks of 1 to 37 readings, several per request
    rng = np.random.default_rng(0)
    got = {m: [] for m in series}
    sent = dict.fromkeys(series, 0)
    while any(sent[m] < len(series[m][0]) for m in series):
        streams = []
        for machine in rng.permutation(list(series)).tolist():
            X = series[machine][0]
            if sent[machine] < len(X) and rng.random() < 0.7:
                n = int(rng.integers(1, 38))
                streams.append({"series": machine,
                                "rows": X[sent[machine]:sent[machine] + n].tolist()})
                sent[machine] = min(len(X), sent[machine] + n)
        if not streams:
            continue
        response = httpx.post(f"{server}/models/machines/stream", json={"streams": streams})
        assert response.status_code == 200, response.text
        for part in response.json()["series"]:
            got[part["series"]].extend(part["scores"])
    for machine in series:
        scores = got[machine]
        assert scores[:5] == [None] * 5  # no full window yet
        streamed = np.array(scores[5:], dtype=np.float32)
        assert np.array_equal(streamed, expected[machine])
        assert np.array_equal(streamed, over_http[machine])


def test_the_stuck_sensor_raises_one_alarm_and_ends_it(windowed_model, server):
    data, version = windowed_model
    threshold = ModelCard.read(version / "model.json").threshold
    X, labels = readings(data)["m2"]
    answer = httpx.post(f"{server}/models/machines/stream",
                        json={"series": "stuck-check", "rows": X.tolist()}).json()
    assert answer["window"] == 6 and answer["threshold"] == threshold
    (part,) = answer["series"]
    events = [(i, e) for i, e in enumerate(part["events"]) if e is not None]
    starts = [i for i, e in events if e == "start"]
    ends = [i for i, e in events if e == "end"]
    stuck = np.flatnonzero(labels)
    # the first alarm is raised while the sensor is stuck, and ends after it moves again
    start, end = starts[0], ends[0]
    assert stuck[0] <= start <= stuck[-1] < end
    # the alarm state follows its events, reading by reading
    on, expected = False, []
    for event in part["events"]:
        on = {"start": True, "end": False}.get(event, on)
        expected.append(on)
    assert part["alarm"] == expected
    # far fewer alarms than readings above the threshold: that is the policy's point
    flagged = sum(1 for v in part["is_anomaly"] if v)
    assert len(starts) <= 3 and flagged >= 3 * len(starts)
    # the defaults: median of 3, 3 of the last 5 smoothed scores above the threshold
    smoothed = np.array(part["smoothed"][5:], dtype=np.float64)
    scores = np.array(part["scores"][5:], dtype=np.float64)
    assert smoothed[2] == np.median(scores[:3])
    metrics = httpx.get(f"{server}/metrics").text
    assert 'aeserve_alarm_events_total{event="start",model="machines"}' in metrics


def test_explanations_name_the_readings_features(windowed_model, server):
    data, _ = windowed_model
    X, _ = readings(data)["m0"]
    answer = httpx.post(f"{server}/models/machines/stream",
                        json={"series": "explained", "rows": X[:7].tolist(),
                              "explain": True}).json()
    explained = answer["series"][0]["explanations"]
    assert explained[:5] == [None] * 5
    assert len(explained[6]["feature_errors"]) == 2  # per feature, summed over the steps
    assert {t["feature"] for t in explained[6]["top_features"]} == {"a", "b"}


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"series": "x", "rows": [[1.0, 2.0, 3.0]]}, 422, "wrong_width"),
    ({"series": "x", "rows": [[1.0, "two"]]}, 422, "non_numeric"),
    ({"series": "x", "rows": []}, 422, "empty_instances"),
    ({"series": "x"}, 422, "missing_instances"),
    ({"series": ["x"], "rows": [[1.0, 2.0]]}, 422, "invalid_instances"),
    ({"series": "pump-\ud800", "rows": [[1.0, 2.0]]}, 422, "invalid_instances"),
    ({"streams": [{"series": f"s{i}", "rows": [[1.0, 2.0]]} for i in range(6)]}, 413,
     "too_many_series"),
    ({"series": "x", "rows": [[1.0, 2.0]], "window": 3}, 422, "invalid_parameter"),
])
def test_bad_stream_requests_get_typed_errors(server, body, status, code):
    response = httpx.post(f"{server}/models/machines/stream", content=json.dumps(body),
                          headers={"content-type": "application/json"})  # \ud800 escaped
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_non_finite_readings_and_unknown_models_are_refused(server):
    response = httpx.post(f"{server}/models/machines/stream",
                          content=b'{"series": "x", "rows": [[NaN, 1.0]]}',
                          headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "non_finite"
    response = httpx.post(f"{server}/models/nope/stream", content=json.dumps(
        {"series": "x", "rows": [[1.0, 2.0]]}))
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_model"


def test_a_refused_request_keeps_nothing_and_an_unscorable_series_starts_over(windowed_model,
                                                                                server):
    """Readings whose window's score overflows float32 are refused by series and reading, and
    none of the request's readings is kept: a series whose windows scored continues from the
    readings before. The series whose window overflowed starts over, so that a reading too large
    for the model, kept unscored while it completed no window, cannot block it for good."""
    data, version = windowed_model
    X, _ = readings(data)["m1"]
    url = f"{server}/models/machines/stream"
    stuck = X[:5].copy()
    stuck[2] += 1e30  # completes no window: kept, unscored
    for name, rows in (("kept", X[:5]), ("stuck", stuck)):
        assert httpx.post(url, json={"series": name, "rows": rows.tolist()}).status_code == 200
    refused = httpx.post(url, json={"streams": [{"series": "kept", "rows": X[5:6].tolist()},
                                                {"series": "stuck", "rows": X[5:6].tolist()}]})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "non_finite_result"
    assert error["readings"] == [{"series": "stuck", "reading": 0}]
    session = ort.InferenceSession(str(version / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    expected = session.run(["score"], {"x": np.repeat(X[:6].reshape(1, -1), 2, axis=0)})[0]
    for name in ("kept", "stuck"):
        answer = httpx.post(url, json={"series": name, "rows": X[5:6].tolist()}).json()
        scores = answer["series"][0]["scores"]
        assert scores == ([float(expected[0])] if name == "kept" else [None]), name
    again = httpx.post(url, json={"series": "stuck", "rows": X[:6].tolist()}).json()
    assert again["series"][0]["scores"][5] == float(expected[0])  # scored again


def test_the_python_client_streams_series_and_reads_the_answer(windowed_model, server):
    from aeserve.client import Client

    data, _ = windowed_model
    X, _ = readings(data)["m0"]
    with Client(server) as client:
        result = client.stream("machines", {"client-a": X[:8], "client-b": X[:3]})
    assert result.window == 6 and [s.series for s in result.series] == ["client-a", "client-b"]
    a = result["client-a"]
    assert np.isnan(a.scores[:5]).all() and np.isfinite(a.scores[5:]).all()
    assert a.is_anomaly[:5] == [None] * 5 and len(a.alarm) == 8
    assert np.isnan(result["client-b"].scores).all()


def test_the_client_sends_named_readings_and_leaves_bad_ones_to_the_server(windowed_model,
                                                                            server):
    """Readings as dicts of named features go as they are; rows the server cannot take get its
    typed error, not a local ValueError."""
    from aeserve.client import Client
    from aeserve.client.errors import AeserveError

    data, _ = windowed_model
    X, _ = readings(data)["m0"]
    named = [{"b": float(b), "a": float(a)} for a, b in X[:6]]
    with Client(server) as client:
        by_name = client.stream("machines", {"named": named})
        by_position = client.stream("machines", {"positional": X[:6]})
        assert by_name["named"].scores[5] == by_position["positional"].scores[5]
        for rows, code in (([[1.0, 2.0], [1.0]], "ragged_rows"), ([], "empty_instances")):
            with pytest.raises(AeserveError) as caught:
                client.stream("machines", {"bad": rows})
            assert caught.value.code == code


@pytest.mark.parametrize("rows", [
    [], "x", [[1.0, 2.0, 3.0]], [[1.0], [1.0, 2.0]], [{"a": 1.0}], [[1.0, "two"]],
    [[1e39, 1.0]], [[10 ** 400, 1.0]], [1.0, 2.0],
])
def test_the_runner_names_bad_rows_with_the_stream_routes_codes(server, rows):
    from aeserve.batch.stream_scorer import MessageError, parse_message

    body = json.dumps({"series": "x", "rows": rows})
    response = httpx.post(f"{server}/models/machines/stream", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    with pytest.raises(MessageError) as caught:
        parse_message(body.encode(), features=["a", "b"])
    assert caught.value.code == response.json()["error"]["code"]


def test_many_series_in_one_request_are_bounded_and_scored_off_the_loop(windowed_model):
    data, version = windowed_model
    X = next(iter(readings(data).values()))[0][:8]
    session = ort.InferenceSession(str(version / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    expected = session.run(["score"], {"x": flatten(X, window_rows(
        *series_order(None, None, len(X)), 6))})[0]
    with running_server(version.parent.parent,
                        AESERVE_STREAM_MAX_SERIES_PER_REQUEST="100") as url:
        too_many = httpx.post(f"{url}/models/machines/stream", json={"streams": [
            {"series": f"s{i}", "rows": [[1.0, 2.0]]} for i in range(101)]})
        assert too_many.status_code == 413
        assert too_many.json()["error"]["code"] == "too_many_series"
        assert "in one request" in too_many.json()["error"]["message"]
        # 80 series: more than are answered on the event loop, the same scores as ever
        answer = httpx.post(f"{url}/models/machines/stream", json={"streams": [
            {"series": f"s{i}", "rows": X.tolist()} for i in range(80)]})
        assert answer.status_code == 200, answer.text
        for part in answer.json()["series"]:
            assert part["scores"][:5] == [None] * 5
            assert np.array_equal(np.array(part["scores"][5:], np.float32), expected)
