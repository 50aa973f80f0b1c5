"""Train with the CLI, serve the result, score over HTTP: the whole path a user takes."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from tests.helpers import ROOT, far_rows, manifold_data, running_server


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aeserve.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_train_export_serve(tmp_path):
    normal = manifold_data(n_rows=300, width=5, seed=3)
    data_file = tmp_path / "normal.npz"
    np.savez(data_file, X=normal)  # unlabelled: every row is taken as normal
    models_dir = tmp_path / "models"

    trained = run_cli("train", "--data", str(data_file), "--name", "plant", "--hidden", "3",
                      "--epochs", "300", "--seed", "1", "--quiet", "--models-dir",
                      str(models_dir))
    assert trained.returncode == 0, trained.stderr
    assert f"written to {models_dir / 'plant' / '1'}" in trained.stdout
    assert "parity max abs error" in trained.stdout

    fresh_normal = manifold_data(n_rows=300, width=5, seed=3)[:50]  # training-like rows
    outliers = far_rows(normal, 30, seed=4)
    with running_server(models_dir) as url:
        body = {"instances": np.vstack([fresh_normal, outliers]).tolist()}
        answer = httpx.post(f"{url}/anomaly-score", json=body, timeout=10).json()
    flags = np.asarray(answer["is_anomaly"])
    assert flags[50:].all(), "every far row must score above the threshold"
    assert flags[:50].mean() <= 0.1, "training-like rows must mostly score below it"
    scores = np.asarray(answer["scores"])
    assert np.median(scores[:50]) < answer["threshold"] < scores[50:].min()


def test_train_reports_bad_data_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,x\n")
    result = run_cli("train", "--data", str(bad), "--name", "m", "--models-dir", str(tmp_path))
    assert result.returncode == 2
    assert "column 'b' is not numeric" in result.stderr
    assert "Traceback" not in result.stderr


def test_serving_never_imports_torch(tmp_path):
    code = (
        "import sys\n"
        "from aeserve.serving.app import create_app\n"
        "from aeserve.cli import build_parser\n"
        "from aeserve.serving.settings import Settings\n"
        f"create_app(Settings(models_dir={str(ROOT / 'models')!r}))\n"
        "build_parser()\n"
        "leaked = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not leaked, leaked\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_shipped_default_model_serves_and_flags_malignant_rows():
    """models/breast-cancer: benign rows mostly pass, malignant rows score higher."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.metrics import roc_auc_score

    data = load_breast_cancer()
    with running_server(ROOT / "models") as url:
        card = httpx.get(f"{url}/models/breast-cancer").json()["card"]
        answer = httpx.post(f"{url}/anomaly-score", json={"instances": data.data.tolist()},
                            timeout=10).json()
    assert card["feature_names"] == list(data.feature_names)
    scores = np.asarray(answer["scores"])
    malignant = data.target == 0
    assert roc_auc_score(malignant, scores) > 0.9
    assert np.asarray(answer["is_anomaly"])[~malignant].mean() < 0.05
    assert np.asarray(answer["is_anomaly"])[malignant].mean() > 0.3
    assert (ROOT / "models" / "breast-cancer" / "1" / "model.onnx").stat().st_size < 1_000_000


def test_evaluate_reports_metrics_and_plots(tmp_path, trained, csv_file):
    import json

    import onnxruntime as ort
    from sklearn.metrics import average_precision_score, roc_auc_score

    from aeserve.training.data import load_dataset

    report = tmp_path / "report"
    result = run_cli("evaluate", "--model", str(trained.path.parent), "--data", str(csv_file),
                     "--label-column", "label", "--report", str(report))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    data = load_dataset(csv_file, "label")
    scores = ort.InferenceSession(str(trained.path / "model.onnx")).run(
        ["score"], {"x": data.X.astype(np.float32)})[0]
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(data.y, scores))
    assert metrics["average_precision"] == pytest.approx(average_precision_score(data.y, scores))
    at_model = metrics["at_model_threshold"]
    assert at_model["threshold"] == pytest.approx(trained.card.threshold)
    assert at_model["flagged"] == int((scores > trained.card.threshold).sum())
    best = metrics["at_best_f1_threshold"]
    assert best["f1"] >= at_model["f1"]
    assert best["flagged"] == int((scores > best["threshold"]).sum())
    for name in ("index.html", "loss_curves.png", "scores.png", "roc.png", "pr.png"):
        assert (report / name).stat().st_size > 1000, name
    assert (trained.path / "loss_curves.png").is_file()  # written at training


def test_threshold_rules_from_the_cli(tmp_path, csv_file):
    import json

    result = run_cli("train", "--data", str(csv_file), "--name", "c", "--epochs", "30",
                     "--threshold", "contamination:0.05", "--quiet", "--models-dir",
                     str(tmp_path), "--drop-columns", "label")  # unlabelled: labels unused
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "c" / "1" / "model.json").read_text())
    assert card["threshold_rule"] == "contamination:0.05"
    bad = run_cli("train", "--data", str(csv_file), "--name", "c", "--threshold", "top:5",
                  "--models-dir", str(tmp_path))
    assert bad.returncode == 2 and "unknown threshold rule" in bad.stderr
