"""The feedback loop over real HTTP: requests carry ids, the server logs what it answered to
Parquet, labels sent back change the confusion counts in /metrics, and `aeserve evaluate
--from-log` reproduces those counts from the files."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import ROOT, add_version, server_process, wait_for


def metric_counts(text: str, model: str = "sensors") -> dict[str, int]:
    counts = {}
    for line in text.splitlines():
        if line.startswith("aeserve_feedback_labels_total{") and f'model="{model}"' in line:
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def expected_outcomes(flags: list[bool], labels: list[int]) -> dict[str, int]:
    names = {(True, 1): "true_positive", (True, 0): "false_positive",
             (False, 0): "true_negative", (False, 1): "false_negative"}
    counts: dict[str, int] = {}
    for flag, label in zip(flags, labels, strict=True):
        counts[names[flag, label]] = counts.get(names[flag, label], 0) + 1
    return counts


@pytest.fixture
def traffic(normal_rows):
    """200 rows, a tenth pushed off the manifold: those are the true anomalies."""
    rng = np.random.default_rng(5)
    rows = normal_rows[:200].copy()
    truth = np.zeros(len(rows), dtype=int)
    truth[::10] = 1
    rows[truth == 1] += 4 * normal_rows.std(axis=0)
    return rows, truth, rng


def test_labels_change_the_confusion_counts_and_evaluate_reproduces_them(
        tmp_path, trained, traffic):
    rows, truth, _ = traffic
    add_version(tmp_path / "models", trained.path, "sensors", 1)
    log_dir = tmp_path / "log"
    with server_process(tmp_path / "models", AESERVE_PREDICTION_LOG=str(log_dir),
                        AESERVE_PREDICTION_LOG_FLUSH_S="0.2") as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        flags, scores = [], []
        for start in range(0, len(rows), 50):
            ids = [f"row-{i}" for i in range(start, start + 50)]
            answer = client.post("/models/sensors/anomaly-score",
                                 json={"instances": rows[start:start + 50].tolist(), "ids": ids})
            assert answer.status_code == 200
            assert answer.json()["ids"] == ids  # echoed
            flags += answer.json()["is_anomaly"]
            scores += answer.json()["scores"]
        # rows without ids are answered (and logged) as before, with no ids in the answer
        plain = client.post("/anomaly-score", json={"instances": rows[:3].tolist()}).json()
        assert "ids" not in plain
        assert metric_counts(client.get("/metrics").text) == {}

        first = list(range(0, 100))
        answer = client.post("/models/sensors/feedback", json={
            "ids": [f"row-{i}" for i in first] + ["never-sent"],
            "labels": [int(truth[i]) for i in first] + [1]})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["received"], body["matched"], body["unmatched"]) == (101, 100, 1)
        assert body["unmatched_ids"] == ["never-sent"]
        expected = expected_outcomes([flags[i] for i in first], [int(truth[i]) for i in first])
        assert body["outcomes"] == expected
        assert metric_counts(client.get("/metrics").text) == expected

        second = list(range(100, 200))
        client.post("/models/sensors/feedback", json={
            "ids": [f"row-{i}" for i in second], "labels": [int(truth[i]) for i in second]})
        expected = expected_outcomes(flags, truth.tolist())
        assert metric_counts(client.get("/metrics").text) == expected
        assert expected["true_positive"] > 0 and expected["true_negative"] > 0  # not vacuous
        unmatched = [line for line in client.get("/metrics").text.splitlines()
                     if line.startswith("aeserve_feedback_unmatched_labels_total{")]
        assert unmatched == ['aeserve_feedback_unmatched_labels_total{model="sensors"} 1.0']
        wait_for(lambda: sum(pq.read_metadata(p).num_rows
                             for p in log_dir.glob("predictions-*.parquet")) == 203)

    logged = pq.read_table(sorted(log_dir.glob("predictions-*.parquet"))).to_pydict()
    assert logged["id"][:200] == [f"row-{i}" for i in range(200)]
    assert logged["id"][200:] == [None, None, None]
    np.testing.assert_allclose(logged["score"][:200], scores, rtol=1e-6)
    assert logged["is_anomaly"][:200] == flags
    assert set(logged["threshold"]) == {trained.card.threshold}
    assert "features" not in logged  # only with AESERVE_PREDICTION_LOG_FEATURES

    run = subprocess.run([sys.executable, "-m", "aeserve.cli", "evaluate", "--from-log",
                          str(log_dir), "--json", "--target-precision", "1.0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    [version] = result["versions"]
    assert version["served"] == {o: expected.get(o, 0) for o in (
        "true_positive", "false_positive", "true_negative", "false_negative")}
    assert result["unmatched_labels"] == {"sensors": 1}
    # the proposal by hand: the most rows flagged with every flagged row an anomaly
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    ranked_truth = truth[order]
    k = int(np.argmax(ranked_truth == 0))  # rows above the highest-scoring normal row
    proposal = version["proposal"]
    assert proposal["flagged"] == k and proposal["rates"]["precision"] == 1.0
    ranked = np.asarray(scores, dtype=np.float32)[order].astype(np.float64)
    assert proposal["threshold"] == pytest.approx((ranked[k - 1] + ranked[k]) / 2)  # midway
    assert proposal["config_json"] == {"thresholds": {"1": {"value": proposal["threshold"]}}}


def test_feedback_errors_are_typed(tmp_path, trained, normal_rows):
    add_version(tmp_path / "models", trained.path, "sensors", 1)
    rows = normal_rows[:2].tolist()
    with server_process(tmp_path / "models") as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        off = client.post("/models/sensors/feedback", json={"ids": ["a"], "labels": [1]})
        assert off.status_code == 409 and off.json()["error"]["code"] == "prediction_log_off"
        wrong = client.post("/anomaly-score", json={"instances": rows, "ids": ["a"]})
        assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_ids"
        kinds = client.post("/anomaly-score", json={"instances": rows, "ids": ["a", 1.5]})
        assert kinds.status_code == 422 and "id 1" in kinds.json()["error"]["message"]
        lone = client.post("/anomaly-score", content=b'{"instances": ' + json.dumps(
            rows).encode() + b', "ids": ["a", "\\ud800"]}',
                           headers={"content-type": "application/json"})
        assert lone.status_code == 422 and lone.json()["error"]["code"] == "invalid_ids"
        echoed = client.post("/encode", json={"instances": rows, "ids": [7, "b"]})
        assert echoed.status_code == 200 and echoed.json()["ids"] == [7, "b"]
    with server_process(tmp_path / "models", AESERVE_MAX_BODY_BYTES="65536",
                        AESERVE_PREDICTION_LOG=str(tmp_path / "log")) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        # Bounded like the inference routes: refused before it is read, known model or not.
        many = {"ids": [f"row-{i}" for i in range(10_000)], "labels": [1] * 10_000}
        for model in ("sensors", "nope"):
            large = client.post(f"/models/{model}/feedback", json=many)
            assert large.status_code == (413 if model == "sensors" else 404), large.text
        assert large.json()["error"]["code"] == "unknown_model"
        assert client.post("/models/sensors/feedback", json=many).json()["error"]["code"] == \
            "body_too_large"
        for body, status in [({"ids": ["a"], "labels": [2]}, 422),
                             ({"ids": ["a", "b"], "labels": [1]}, 422),
                             ({"ids": [], "labels": []}, 422),
                             ({"ids": [True], "labels": [1]}, 422)]:
            answer = client.post("/models/sensors/feedback", json=body)
            assert answer.status_code == status, body
            assert answer.json()["error"]["code"]
        lone = client.post("/models/sensors/feedback",  # json.dumps escapes it as \ud800
                           content=json.dumps({"ids": ["ok", "a\ud800"], "labels": [1, 0]}),
                           headers={"content-type": "application/json"})
        assert lone.status_code == 422  # the JSON parser refuses the lone surrogate
        assert lone.json()["error"]["code"] == "invalid_parameter"
        unknown = client.post("/models/nope/feedback", json={"ids": ["a"], "labels": [1]})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "unknown_model"


def test_the_client_sends_ids_in_chunks_and_feedback(tmp_path, trained, traffic):
    from aeserve.client import AsyncClient, Client

    rows, truth, _ = traffic
    add_version(tmp_path / "models", trained.path, "sensors", 1)
    with server_process(tmp_path / "models",
                        AESERVE_PREDICTION_LOG=str(tmp_path / "log")) as server:
        ids = [f"c{i}" for i in range(len(rows))]
        with Client(server.url, max_rows_per_request=64) as client:  # four requests
            result = client.anomaly_score(rows, model="sensors", ids=ids)
            assert result.ids == ids and len(result) == len(rows)
            with pytest.raises(ValueError, match="one id per row"):
                client.anomaly_score(rows, ids=ids[:3])
            answer = client.feedback("sensors", ids, truth)
        assert (answer.received, answer.matched, answer.unmatched) == (len(rows), len(rows), 0)
        assert answer.outcomes == expected_outcomes(result.is_anomaly.tolist(), truth.tolist())

        async def late_labels():
            async with AsyncClient(server.url) as client:
                return await client.feedback("sensors", ["c0", "unknown"], [1, 0])

        import asyncio

        late = asyncio.run(late_labels())
        assert (late.matched, late.unmatched_ids) == (1, ["unknown"])


def test_v2_rows_are_logged_with_their_ids_and_take_labels(tmp_path, trained, traffic):
    rows, truth, _ = traffic
    add_version(tmp_path / "models", trained.path, "sensors", 1)
    with server_process(tmp_path / "models",
                        AESERVE_PREDICTION_LOG=str(tmp_path / "log")) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        ids = [f"v2-{i}" for i in range(20)]
        answer = client.post("/v2/models/sensors/infer", json={
            "inputs": [{"name": "x", "shape": [20, rows.shape[1]], "datatype": "FP32",
                        "data": rows[:20].ravel().tolist()}],
            "outputs": [{"name": "is_anomaly"}], "parameters": {"ids": ids}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["parameters"]["ids"] == ids
        flags = answer.json()["outputs"][0]["data"]
        feedback = client.post("/models/sensors/feedback",
                               json={"ids": ids, "labels": truth[:20].tolist()}).json()
        assert feedback["matched"] == 20
        assert feedback["outcomes"] == expected_outcomes(flags, truth[:20].tolist())
        wrong = client.post("/v2/models/sensors/infer", json={
            "inputs": [{"name": "x", "shape": [2, rows.shape[1]], "datatype": "FP32",
                        "data": rows[:2].ravel().tolist()}], "parameters": {"ids": ["a"]}})
        # the protocol's error shape: {"error": "<message>"}
        assert wrong.status_code == 422 and '"ids" has 1 ids for 2 rows' in wrong.json()["error"]
