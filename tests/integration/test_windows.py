"""`aeserve train --window`: a model of windows of readings, exported, its card saying so."""

from __future__ import annotations

import csv

import numpy as np
import onnxruntime as ort
import pytest

from aeserve.artifact.card import ModelCard
from aeserve.artifact.windows import flatten, series_order, window_rows
from aeserve.training.cli import main as training_main
from tests.helpers import machine_readings


def read_back(path):
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    X = np.array([[float(r["a"]), float(r["b"])] for r in rows], dtype=np.float32)
    return X, np.array([r["machine"] for r in rows]), np.array([r["time"] for r in rows]), \
        np.array([int(r["label"]) for r in rows])


def test_the_card_says_the_window_and_the_graph_reads_flattened_windows(windowed_model):
    _, version = windowed_model
    card = ModelCard.read(version / "model.json")
    assert card.schema_version == 3
    assert card.window.model_dump() == {"size": 6, "stride": 1, "features": ["a", "b"],
                                        "series_column": "machine", "time_column": "time"}
    assert card.input_dim == 12 and card.feature_names[:2] == ["a[t-5]", "b[t-5]"]
    assert card.feature_names[-2:] == ["a[t]", "b[t]"]
    # 3 machines of 300 readings: 295 windows each, less the 10 labelled anomalies
    assert card.training.rows_train == 3 * 295 - 10
    assert card.evaluation.rows_anomalous == 10


def test_a_stuck_sensor_is_found_by_its_context(windowed_model):
    data, version = windowed_model
    card = ModelCard.read(version / "model.json")
    X, machines, times, labels = read_back(data)
    rows = window_rows(*series_order(machines, times, len(X)), 6)
    session = ort.InferenceSession(str(version / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    scores = session.run(["score"], {"x": flatten(X, rows)})[0]
    window_labels = labels[rows[:, -1]]
    # every reading of the stuck sensor lies within the normal range of b ...
    assert X[labels == 1, 1].min() > X[labels == 0, 1].min()
    assert X[labels == 1, 1].max() < X[labels == 0, 1].max()
    # ... yet its windows score above the threshold, and above nearly every normal window
    assert (scores[window_labels == 1] > card.threshold).all()
    assert card.evaluation.roc_auc > 0.95


@pytest.mark.parametrize(("extra", "message"), [
    (["--stride", "2"], "--stride need --window"),
    (["--window", "1"], "at least 2 readings"),
    (["--window", "4", "--series-column", "nope"], "no column 'nope'"),
    (["--window", "400", "--series-column", "machine"], "longest series has 300 rows"),
    (["--window", "4", "--series-column", "machine", "--time-column", "machine"], "different"),
])
def test_window_options_are_checked(tmp_path, capsys, extra, message):
    data = machine_readings(tmp_path / "machines.csv", n_series=1)
    code = training_main(["train", "--data", str(data), "--name", "m", "--label-column",
                          "label", "--drop-columns", "time", "--models-dir",
                          str(tmp_path / "models"), "--quiet", *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_aeserve_score_scores_each_reading_by_its_window(windowed_model, tmp_path):
    import pyarrow.parquet as pq

    from aeserve.batch.cli import main as score_main

    data, version = windowed_model
    out = tmp_path / "scored.parquet"
    assert score_main(["--model", str(version), "--data", str(data), "--out", str(out),
                       "--keep-columns", "machine", "time", "--top-k", "2", "--quiet"]) == 0
    result = pq.read_table(out).to_pandas()
    X, machines, times, _ = read_back(data)
    assert list(result["machine"]) == list(machines)  # the file's order, row for row
    rows = window_rows(*series_order(machines, times, len(X)), 6)
    session = ort.InferenceSession(str(version / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    expected = session.run(["score"], {"x": flatten(X, rows)})[0]
    assert np.array_equal(result["score"].to_numpy(np.float32)[rows[:, -1]], expected)
    # the first 5 readings of each machine have no window: no score, no verdict
    unscored = result[result["score"].isna()]
    assert len(unscored) == 3 * 5 and unscored["is_anomaly"].isna().all()
    assert set(result["top1_feature"].dropna()) <= {"a", "b"}


def test_aeserve_evaluate_scores_the_windows_of_a_labelled_file(windowed_model, capsys):
    import json

    data, version = windowed_model
    assert training_main(["evaluate", "--model", str(version), "--data", str(data),
                          "--label-column", "label"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 3 * 295 and result["anomalies"] == 10
    assert result["roc_auc"] > 0.95


def test_aeserve_score_refuses_readings_without_their_series(windowed_model, tmp_path, capsys):
    from aeserve.batch.cli import main as score_main

    data, version = windowed_model
    lines = data.read_text().splitlines()
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join([lines[0], "," + lines[1].split(",", 1)[1], *lines[2:]]) + "\n")
    assert score_main(["--model", str(version), "--data", str(broken), "--out",
                       str(tmp_path / "out.csv"), "--quiet"]) == 2
    assert "column 'machine' has 1 missing values" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_an_npz_archive_gives_its_series_as_an_array_of_its_own(tmp_path):
    rng = np.random.default_rng(0)
    X = np.column_stack([np.sin(np.arange(400) / 8), np.cos(np.arange(400) / 8)])
    X += 0.03 * rng.normal(size=X.shape)
    np.savez(tmp_path / "r.npz", X=X, machine=np.repeat(["m0", "m1"], 200),
             step=np.tile(np.arange(200), 2))
    assert training_main(["train", "--data", str(tmp_path / "r.npz"), "--name", "n", "--window",
                          "4", "--series-column", "machine", "--time-column", "step",
                          "--models-dir", str(tmp_path / "models"), "--quiet"]) == 0
    card = ModelCard.read(tmp_path / "models" / "n" / "1" / "model.json")
    assert card.training.rows_train == 2 * 197 and card.window.features == ["x0", "x1"]
