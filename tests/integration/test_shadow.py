"""A shadow version over real HTTP: it scores the live traffic beside the active version, whose
answers it never changes, and its disagreement counts equal an offline comparison of the two
exported graphs on the same rows."""

from __future__ import annotations

import json

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from aeserve.artifact.scores import verdicts
from aeserve.serving.shadow import compare_verdicts
from tests.helpers import add_version, server_process, wait_for


@pytest.fixture(scope="module")
def candidate(tmp_path_factory, csv_file):
    """A second model of the same features: another seed and a narrower code."""
    from aeserve.training.data import load_dataset
    from aeserve.training.pipeline import TrainOptions, train_and_export
    from aeserve.training.trainer import TrainConfig

    options = TrainOptions(name="sensors", models_dir=tmp_path_factory.mktemp("candidate"),
                           hidden_sizes=[8, 2], command="test",
                           train=TrainConfig(epochs=100, seed=1, progress=False))
    return train_and_export(load_dataset(csv_file, "label"), options)


def graph_scores(folder, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["score"], {"x": rows.astype(np.float32)})[0]


def test_shadow_disagreements_equal_an_offline_comparison(tmp_path, trained, candidate,
                                                          normal_rows):
    add_version(tmp_path, trained.path, "sensors", 1)
    shadow_folder = add_version(tmp_path, candidate.path, "sensors", 2)
    # The shadow at its own 90th percentile: it raises alarms the active version does not.
    (tmp_path / "sensors" / "config.json").write_text(json.dumps(
        {"shadow": {"version": 2, "fraction": 1.0}, "thresholds": {"2": {"rule": "quantile:0.9"}}}))
    rng = np.random.default_rng(3)
    rows = normal_rows + rng.normal(size=normal_rows.shape) * normal_rows.std(axis=0) * (
        rng.random((len(normal_rows), 1)) < 0.1)  # a tenth of the rows pushed off the manifold
    with server_process(tmp_path) as server, httpx.Client(base_url=server.url,
                                                          timeout=30) as client:
        summary = client.get("/models/sensors").json()
        assert summary["active_version"] == 1
        assert summary["shadow"] == {"version": 2, "fraction": 1.0, "state": "ready",
                                     "comparing": True}
        active_flags = []
        for start in range(0, len(rows), 50):
            answer = client.post("/anomaly-score", json={"instances": rows[start:start + 50]
                                                         .tolist()})
            assert answer.status_code == 200 and answer.json()["version"] == 1  # never the shadow
            active_flags += answer.json()["is_anomaly"]
        report = wait_for(lambda: (r := client.get("/models/sensors/shadow").json())[
            "rows_compared"] == len(rows) and r, timeout=10)
        shadow_threshold = client.get("/models/sensors/versions/2").json()["threshold"]["value"]
        metrics = client.get("/metrics").text

    offline = compare_verdicts(
        verdicts(graph_scores(trained.path, rows), trained.card.threshold),
        verdicts(graph_scores(shadow_folder, rows), shadow_threshold))
    assert offline == report["outcomes"]
    assert offline["new_alarm"] > 0  # the comparison can tell the versions apart
    assert np.array_equal(active_flags, verdicts(graph_scores(trained.path, rows),
                                                 trained.card.threshold))
    assert report["rows_skipped"] == 0 and report["active_version"] == 1
    assert report["agreement"] == pytest.approx(
        (offline["both_normal"] + offline["both_anomaly"]) / len(rows))
    line = ('aeserve_shadow_rows_total{model="sensors",outcome="new_alarm",shadow_version="2",'
            'version="1"}')
    assert f"{line} {float(offline['new_alarm'])}" in metrics


def test_a_model_without_a_shadow_says_so(tmp_path, trained):
    add_version(tmp_path, trained.path, "sensors", 1)
    with server_process(tmp_path) as server:
        answer = httpx.get(f"{server.url}/models/sensors/shadow")
        missing = httpx.get(f"{server.url}/models/nope/shadow")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "no_shadow"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_model"
