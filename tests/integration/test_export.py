"""The exported artifact: ONNX contract, parity with torch, the card, atomic versioning."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from aeserve.artifact.card import ModelCard, file_sha256
from aeserve.training import export
from aeserve.training.data import load_dataset
from aeserve.training.pipeline import TrainOptions, train_and_export
from aeserve.training.trainer import TrainConfig
from tests.helpers import far_rows


def test_graph_contract(trained):
    graph = onnx.load(str(trained.path / "model.onnx"))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["x"]
    assert [o.name for o in graph.graph.output] == [
        "embedding", "reconstruction", "score", "feature_errors"]
    batch_dim = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param  # symbolic: any batch size


def test_outputs_for_any_batch_size_and_consistent(trained, normal_rows):
    session = ort.InferenceSession(str(trained.path / "model.onnx"))
    for n in (1, 7, 300):
        rows = normal_rows[:n].astype(np.float32)
        embedding, reconstruction, score, feature_errors = session.run(None, {"x": rows})
        assert embedding.shape == (n, 5 * 4)  # five members' codes of 4, side by side
        assert reconstruction.shape == (n, 6)
        assert score.shape == (n,) and feature_errors.shape == (n, 6)
        np.testing.assert_allclose(score, feature_errors.mean(axis=1), rtol=1e-5)
    # Feature errors are squared errors in the scaled space averaged over the members, so they
    # are at least the squared error of the members' mean reconstruction (Jensen), which is
    # recomputed here from the card; tests/unit/training/test_members.py checks the exact values.
    scale = np.array(trained.card.preprocessing.scale)
    of_the_mean = ((reconstruction - rows) / scale) ** 2
    assert np.all(feature_errors >= of_the_mean * (1 - 1e-3) - 1e-6)
    assert np.mean(feature_errors) > np.mean(of_the_mean)  # the members do disagree


def test_card_records_the_artifact(trained):
    card = ModelCard.read(trained.path / "model.json")
    assert card == trained.card
    assert card.onnx_sha256 == file_sha256(trained.path / "model.onnx")
    assert card.parity_rows == 1000
    assert 0 <= card.parity_max_abs_error <= 1e-4
    assert card.input_dim == 6 and card.feature_names == [f"f{i}" for i in range(6)]
    assert card.threshold == pytest.approx(np.interp(0.99, np.linspace(0, 1, 101),
                                                     card.score_quantiles), rel=1e-6)
    # Cross-fitted members: every normal row trains, and every one is scored out of fold.
    assert card.training.rows_train == card.training.rows_validation == 400
    assert card.training.calibration == "cross-fit" and card.architecture.members == 5
    assert card.evaluation is not None and card.evaluation.rows_anomalous == 20
    assert card.evaluation.roc_auc > 0.95


def test_the_graph_carries_what_a_score_means_for_other_runtimes(trained, normal_rows):
    """Without aeserve or the card: onnxruntime's custom metadata alone gives the verdicts and
    the percentiles that aeserve gives."""
    import json

    from aeserve.artifact.scores import percentiles, verdicts

    card = trained.card
    session = ort.InferenceSession(str(trained.path / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["aeserve.card_schema_version"] == "2"
    assert float(meta["aeserve.threshold"]) == card.threshold
    assert meta["aeserve.threshold_rule"] == card.threshold_rule == "quantile:0.99"
    assert json.loads(meta["aeserve.feature_names"]) == card.feature_names
    assert json.loads(meta["aeserve.score_quantiles"]) == card.score_quantiles
    assert meta["aeserve.score_kind"] == card.score.kind
    assert meta["aeserve.verdict"] == "anomalous when score > threshold"
    rows = np.vstack([normal_rows[:50], far_rows(normal_rows, 5)]).astype(np.float32)
    scores = session.run(["score"], {"x": rows})[0]
    assert ((scores > float(meta["aeserve.threshold"])) == verdicts(scores, card.threshold)).all()
    assert (scores[50:] > float(meta["aeserve.threshold"])).all()
    np.testing.assert_allclose(  # what numpy's interp makes of the stored percentiles
        np.interp(scores, json.loads(meta["aeserve.score_quantiles"]), np.arange(101.0)),
        percentiles(scores, card.score_quantiles), atol=1e-9)
    assert file_sha256(trained.path / "model.onnx") == card.onnx_sha256  # after the metadata


def test_rows_far_from_training_data_score_above_threshold(trained, normal_rows):
    session = ort.InferenceSession(str(trained.path / "model.onnx"))
    rows = far_rows(normal_rows, 50, seed=9).astype(np.float32)
    score = session.run(["score"], {"x": rows})[0]
    assert np.all(np.isfinite(score))
    assert score.min() > trained.card.threshold


def test_versions_increment_and_no_staging_left(tmp_path, csv_file):
    options = TrainOptions(name="inc", models_dir=tmp_path, hidden_sizes=[2],
                           train=TrainConfig(epochs=3, progress=False), command="test")
    data = load_dataset(csv_file, "label")
    first = train_and_export(data, options)
    second = train_and_export(data, options)
    assert (first.card.version, second.card.version) == (1, 2)
    assert sorted(p.name for p in (tmp_path / "inc").iterdir()) == ["1", "2"]


def test_failed_parity_publishes_nothing(tmp_path, csv_file, monkeypatch):
    monkeypatch.setattr("aeserve.training.pipeline.PARITY_TOLERANCE", -1.0)
    options = TrainOptions(name="strict", models_dir=tmp_path, hidden_sizes=[2],
                           train=TrainConfig(epochs=2, progress=False), command="test")
    with pytest.raises(export.ExportError, match="parity error"):
        train_and_export(load_dataset(csv_file, "label"), options)
    assert list((tmp_path / "strict").iterdir()) == []


def test_scoring_graph_matches_torch_model(trained):
    """The folded preprocessing is exactly (x - offset) / scale before the torch encoder."""
    from aeserve.training.model import Autoencoder, AutoencoderConfig
    from aeserve.training.preprocessing import AffineScaler

    model = Autoencoder(AutoencoderConfig(input_dim=3, hidden_sizes=[2]))
    scaler = AffineScaler("standard", np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 8.0]))
    graph = export.ScoringGraph(model, scaler)
    x = torch.tensor([[3.0, 6.0, 11.0]])
    with torch.no_grad():
        embedding, reconstruction, score, errors = graph(x)
        z = torch.tensor([[1.0, 1.0, 1.0]])
        assert torch.allclose(embedding, model.encode(z))
        z_hat = model.decode(model.encode(z))
    assert torch.allclose(errors, (z_hat - z) ** 2)
    assert torch.allclose(score, ((z_hat - z) ** 2).mean(dim=1))
    assert torch.allclose(reconstruction, z_hat * torch.tensor([2.0, 4.0, 8.0])
                          + torch.tensor([1.0, 2.0, 3.0]))


def test_invalid_names_and_variants_refused(tmp_path, csv_file):
    data = load_dataset(csv_file, "label")
    with pytest.raises(ValueError, match="invalid model name"):
        train_and_export(data, TrainOptions(name="../x", models_dir=tmp_path))
    with pytest.raises(ValueError, match="unknown variant"):
        train_and_export(data, TrainOptions(name="x", models_dir=tmp_path, variant="gan"))
