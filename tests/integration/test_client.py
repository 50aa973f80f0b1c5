"""The Python client against a real server on 127.0.0.1 serving a real ONNX model."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from aeserve.artifact.card import ONNX_FILENAME
from aeserve.artifact.scores import p_values, percentiles
from aeserve.artifact.session import ModelSession
from aeserve.client import (
    AnomalyScores,
    AsyncClient,
    Client,
    ConnectionFailed,
    InvalidInstances,
    ModelNotReady,
    Unauthorized,
    UnknownModel,
    UnknownVersion,
)
from tests.helpers import ROOT, free_port, manifold_data, running_server


@pytest.fixture(scope="module")
def models_dir(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("client-models")
    shutil.copytree(trained.path, folder / "sensors" / "1")
    return folder


@pytest.fixture(scope="module")
def url(models_dir):
    with running_server(models_dir, AESERVE_POLL_INTERVAL_S="0") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return manifold_data(n_rows=50, seed=7)


@pytest.fixture(scope="module")
def expected(trained, rows):
    session = ModelSession(trained.path / ONNX_FILENAME, trained.card)
    out = session.run(rows.astype(np.float32), ("score", "embedding", "reconstruction"))
    out["percentile"] = percentiles(out["score"], trained.card.score_quantiles).round(3)
    return out


class Recorder:
    """An httpx client that records the requests it sends."""

    def __init__(self, base_url: str, **kwargs) -> None:
        self.requests: list[httpx.Request] = []
        self.http = httpx.Client(base_url=base_url, event_hooks={"request": [self.requests.append]},
                                 **kwargs)


def check_scores(result: AnomalyScores, trained, expected) -> None:
    assert (result.model, result.version) == ("sensors", 1)
    assert result.threshold == trained.card.threshold
    np.testing.assert_allclose(result.scores, expected["score"], rtol=1e-6)
    assert result.scores.dtype == np.float32
    np.testing.assert_array_equal(result.is_anomaly,
                                  result.scores.astype(np.float64) > trained.card.threshold)
    np.testing.assert_allclose(result.percentiles, expected["percentile"], atol=0.002)
    np.testing.assert_allclose(result.p_values, p_values(result.scores,
                                                         trained.card.score_quantiles),
                               rtol=1e-6)


def test_binary_and_json_transports_give_the_same_answers(url, rows, trained, expected):
    recorder = Recorder(url)
    binary = Client(url, http_client=recorder.http).anomaly_score(rows)
    assert recorder.requests[-1].headers["content-type"] == "application/octet-stream"
    assert recorder.requests[-1].headers["accept"] == "application/x-npy"
    assert len(recorder.requests[-1].content) == rows.size * 4
    with Client(url, transport="json") as client:
        as_json = client.anomaly_score(rows.tolist())
    check_scores(binary, trained, expected)
    check_scores(as_json, trained, expected)
    np.testing.assert_array_equal(binary.scores, as_json.scores)
    np.testing.assert_array_equal(binary.percentiles, as_json.percentiles)
    assert len(binary) == 50 and list(binary.anomalies) == list(np.flatnonzero(binary.is_anomaly))


def test_threshold_explain_and_top_k(url, rows, trained):
    session = ModelSession(trained.path / ONNX_FILENAME, trained.card)
    feature_errors = session.run(rows.astype(np.float32), ("feature_errors",))["feature_errors"]
    recorder = Recorder(url)
    client = Client(url, http_client=recorder.http, max_rows_per_request=20)
    result = client.anomaly_score(rows, threshold=0.5, explain=True, top_k=2)
    # 50 rows in three requests, each with the options; explanations come as JSON
    assert len(recorder.requests) == 3
    for request in recorder.requests:
        assert dict(request.url.params) == {"threshold": "0.5", "explain": "true", "top_k": "2"}
        assert request.headers["content-type"] == "application/json"
    assert result.threshold == 0.5
    np.testing.assert_array_equal(result.is_anomaly, result.scores.astype(np.float64) > 0.5)
    assert len(result.explanations) == 50
    names = trained.card.feature_names
    for errors, explanation in zip(feature_errors, result.explanations, strict=True):
        np.testing.assert_allclose(explanation.feature_errors, errors, rtol=1e-5, atol=1e-7)
        top = np.argsort(-errors, kind="stable")[:2]
        assert [c.feature for c in explanation.top_features] == [names[j] for j in top]
        assert explanation.top_features[0].share == pytest.approx(
            errors[top[0]] / errors.sum(), abs=1e-4)
    # a threshold alone keeps the binary transport, the server's answer carries it
    plain = Client(url, http_client=recorder.http).anomaly_score(rows, threshold=0.25)
    assert recorder.requests[-1].headers["content-type"] == "application/octet-stream"
    assert plain.threshold == 0.25 and plain.explanations is None
    with pytest.raises(ValueError, match="pass explain=True"):
        client.anomaly_score(rows, top_k=2)


def test_encode_and_reconstruct(url, rows, expected):
    with Client(url) as client:
        embeddings = client.encode(rows, model="sensors")
        reconstructions = client.reconstruct(rows, model="sensors", version=1)
        one = client.reconstruct(rows[0])  # one flat row is one row
    assert embeddings.embeddings.shape == expected["embedding"].shape
    np.testing.assert_allclose(embeddings.embeddings, expected["embedding"], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(reconstructions.reconstructions, expected["reconstruction"],
                               rtol=1e-5, atol=1e-4)
    assert one.reconstructions.shape == (1, 6)


def test_dataframes_and_records_are_matched_by_name(url, rows, trained, expected):
    names = trained.card.feature_names
    frame = pd.DataFrame(rows, columns=names)[list(reversed(names))]
    frame.insert(0, "sensor_id", [f"s{i}" for i in range(len(frame))])
    recorder = Recorder(url)
    client = Client(url, http_client=recorder.http)
    from_frame = client.anomaly_score(frame)
    assert recorder.requests[-1].headers["content-type"] == "application/octet-stream"
    check_scores(from_frame, trained, expected)
    records = [dict(zip(reversed(names), values, strict=True))
               for values in rows[:, ::-1].tolist()]
    np.testing.assert_array_equal(client.anomaly_score(records).scores, from_frame.scores)
    # One row alone: the graph's batched products may round differently from a 10-row batch.
    np.testing.assert_allclose(client.anomaly_score(records[3]).scores[0], from_frame.scores[3],
                               rtol=1e-5)
    with pytest.raises(InvalidInstances) as missing:
        client.anomaly_score(frame.drop(columns=["f2"]))
    assert missing.value.code == "feature_mismatch" and missing.value.detail["missing"] == ["f2"]
    with pytest.raises(InvalidInstances) as unknown:  # dicts must name exactly the features
        client.anomaly_score([{**records[0], "extra": 1.0}])
    assert unknown.value.code == "feature_mismatch" and "unknown: ['extra']" in str(unknown.value)
    frame_df = from_frame.to_pandas(index=frame["sensor_id"])
    assert list(frame_df.columns) == ["score", "is_anomaly", "percentile", "p_value"]


def test_large_calls_are_split_and_pinned_to_one_version(url, rows, expected):
    recorder = Recorder(url)
    client = Client(url, http_client=recorder.http, max_rows_per_request=16)
    result = client.anomaly_score(rows)
    paths = [r.url.path for r in recorder.requests]
    assert paths == ["/anomaly-score"] + ["/models/sensors/versions/1/anomaly-score"] * 3
    whole = Client(url).anomaly_score(rows)
    np.testing.assert_allclose(result.scores, whole.scores, rtol=1e-6)
    np.testing.assert_array_equal(result.percentiles, whole.percentiles)
    assert len(client.encode(rows).embeddings) == 50


def test_server_errors_are_typed(url, rows):
    with Client(url) as client:
        with pytest.raises(InvalidInstances) as wrong:
            client.anomaly_score(rows[:, :4])
        assert wrong.value.status == 422 and wrong.value.code == "wrong_width"
        assert "the client sent 50 rows of 4 float32 values" in wrong.value.message
        bad = rows[:3].copy()
        bad[1, 2] = np.nan
        with pytest.raises(InvalidInstances, match="row 1, column 2") as nan:
            client.anomaly_score(bad)
        assert nan.value.code == "non_finite"
        with pytest.raises(InvalidInstances) as ragged:  # not a matrix: sent as JSON
            client.anomaly_score([[1.0] * 6, [1.0] * 5])
        assert ragged.value.code == "ragged_rows"
        with pytest.raises(UnknownModel) as unknown:
            client.anomaly_score(rows, model="pumps")
        assert unknown.value.detail["available"] == ["sensors"]
        assert unknown.value.request_id
        with pytest.raises(UnknownVersion):
            client.encode(rows, model="sensors", version=9)


def test_models_and_model(url, trained):
    with Client(url) as client:
        (summary,) = client.models()
        info = client.model("sensors")
        assert client.ready()
    assert (summary.name, summary.default, summary.active_version) == ("sensors", True, 1)
    assert summary.versions[0].state == "ready"
    assert info.feature_names == trained.card.feature_names
    assert info.threshold == trained.card.threshold
    assert info.card["score_quantiles"] == trained.card.score_quantiles
    assert "CPUExecutionProvider" in info.providers


def test_async_client_matches_the_sync_one(url, rows, trained, expected):
    async def main():
        async with AsyncClient(url) as client:
            results = await asyncio.gather(*(client.anomaly_score(rows[i::4]) for i in range(4)))
            frame = pd.DataFrame(rows, columns=trained.card.feature_names)
            return results, await client.anomaly_score(frame), await client.models()

    parts, whole, models = asyncio.run(main())
    for i, part in enumerate(parts):
        np.testing.assert_allclose(part.scores, expected["score"][i::4], rtol=1e-6)
    check_scores(whole, trained, expected)
    assert models[0].name == "sensors"


def test_api_key(models_dir, rows):
    with running_server(models_dir, AESERVE_API_KEY="s3cret") as base_url:
        with pytest.raises(Unauthorized) as refused:
            Client(base_url).anomaly_score(rows)
        assert refused.value.code == "unauthorized"
        assert len(Client(base_url, api_key="s3cret").anomaly_score(rows)) == 50


def test_503_is_retried_then_raised_and_4xx_never(tmp_path, rows):
    broken = tmp_path / "models" / "sensors" / "1"
    broken.mkdir(parents=True)
    (broken / "model.json").write_text("{}")
    with running_server(tmp_path / "models", AESERVE_POLL_INTERVAL_S="0") as base_url:
        recorder = Recorder(base_url)
        client = Client(base_url, http_client=recorder.http, retries=2, backoff=0.01)
        with pytest.raises(ModelNotReady) as not_ready:
            client.anomaly_score(rows, model="sensors")
        assert not_ready.value.status == 503 and not_ready.value.code == "model_not_ready"
        assert len(recorder.requests) == 3
        with pytest.raises(UnknownModel):
            client.anomaly_score(rows, model="pumps")
        assert len(recorder.requests) == 4


def test_connection_errors_are_retried_until_the_server_answers(models_dir, rows):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    recorder = Recorder(url, timeout=2.0)
    with pytest.raises(ConnectionFailed, match="after 3 attempts"):
        Client(url, http_client=recorder.http, retries=2, backoff=0.01).models()
    assert len(recorder.requests) == 3

    # a server that comes up while the client is retrying
    started = threading.Event()

    def start_server() -> None:
        time.sleep(0.5)
        started.set()
        environment = {**os.environ, "AESERVE_MODELS_DIR": str(models_dir)}
        process = subprocess.Popen([sys.executable, "-m", "aeserve.cli", "serve", "--host",
                                    "127.0.0.1", "--port", str(port)], cwd=ROOT,
                                   env=environment, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        processes.append(process)

    processes: list[subprocess.Popen] = []
    thread = threading.Thread(target=start_server)
    thread.start()
    try:
        client = Client(url, retries=60, backoff=0.05, max_backoff=0.5)
        result = client.anomaly_score(rows)
        assert started.is_set() and len(result) == 50
    finally:
        thread.join()
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def test_importing_the_client_needs_no_torch_pandas_or_server():
    heavy = "{'torch', 'pandas', 'fastapi', 'starlette', 'onnxruntime', 'pydantic'}"
    code = (f"import sys, aeserve.client; loaded = {{m for m in sys.modules if m.startswith("
            f"'aeserve.') and not m.startswith('aeserve.client')}} | ({heavy} & set(sys.modules)); "
            "assert not loaded, sorted(loaded)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
