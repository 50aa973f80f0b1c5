"""Every variant trains, exports under the same ONNX contract, and serves with no change."""

from __future__ import annotations

import warnings

import httpx
import numpy as np
import pytest

from aeserve.artifact.card import ModelCard
from aeserve.training.data import load_dataset
from aeserve.training.defaults import default_members
from aeserve.training.objectives import VariantOptions
from aeserve.training.pipeline import OvercompleteWarning, TrainOptions, train_and_export
from aeserve.training.trainer import TrainConfig
from tests.helpers import far_rows, running_server

# name -> (variant, hidden sizes, tied, variant options)
CASES = {
    "ae": ("ae", [3], False, VariantOptions()),
    "sparse-l1": ("sparse-l1", [4], False, VariantOptions(l1_weight=1e-2)),
    "sparse-kl": ("sparse-kl", [8], False, VariantOptions(sparsity_weight=0.5)),
    "denoising": ("denoising", [3], False, VariantOptions(noise="masking", noise_level=0.2)),
    "contractive": ("contractive", [4, 3], False, VariantOptions()),
    "vae": ("vae", [4, 2], False, VariantOptions()),
    "vae-elbo": ("vae", [4, 2], False, VariantOptions(vae_score="elbo")),
    "tied-deep": ("ae", [4, 2], True, VariantOptions()),
    "overcomplete-denoising": ("denoising", [12], True, VariantOptions(noise_level=0.3)),
}


@pytest.fixture(scope="module")
def variant_models(tmp_path_factory, csv_file):
    root = tmp_path_factory.mktemp("variants")
    data = load_dataset(csv_file, "label")
    cards = {}
    for name, (variant, hidden, tied, options) in CASES.items():
        outcome = train_and_export(data, TrainOptions(
            name=name, models_dir=root, variant=variant, hidden_sizes=hidden, tied_weights=tied,
            variant_options=options, command="test",
            train=TrainConfig(epochs=150, seed=0, progress=False)))
        cards[name] = outcome.card
    return root, cards


@pytest.fixture(scope="module")
def server(variant_models):
    with running_server(variant_models[0]) as url:
        yield url


def test_every_variant_passes_parity_and_records_itself(variant_models):
    root, cards = variant_models
    for name, (variant, hidden, tied, _) in CASES.items():
        card = ModelCard.read(root / name / "1" / "model.json")
        assert card.architecture.variant == variant
        assert card.architecture.hidden_sizes == hidden
        assert card.architecture.tied_weights is tied
        assert card.parity_max_abs_error <= 1e-4, name
    assert cards["sparse-l1"].hyperparameters["l1_weight"] == 1e-2
    assert cards["denoising"].hyperparameters["noise"] == "masking"
    assert cards["vae"].score.kind == "residual_cauchy"
    assert len(cards["vae"].score.residual_scale) == cards["vae"].input_dim
    assert cards["vae-elbo"].score.kind == "neg_elbo_scaled"


@pytest.mark.parametrize("name", list(CASES))
def test_each_variant_is_served(server, name, normal_rows):
    rows = np.vstack([normal_rows[:10], far_rows(normal_rows, 5, seed=11)])
    payload = {"instances": rows.tolist()}
    with httpx.Client(base_url=server, timeout=10) as client:
        score = client.post(f"/models/{name}/anomaly-score", json=payload)
        encode = client.post(f"/models/{name}/encode", json=payload)
        reconstruct = client.post(f"/models/{name}/reconstruct", json=payload)
    assert score.status_code == encode.status_code == reconstruct.status_code == 200
    body = score.json()
    variant, hidden, tied, _ = CASES[name]
    members = default_members(variant, tied)  # the members' codes side by side
    assert np.asarray(encode.json()["embeddings"]).shape == (15, hidden[-1] * members)
    assert np.asarray(reconstruct.json()["reconstructions"]).shape == (15, 6)
    scores = np.asarray(body["scores"])
    # far rows score above the bulk of normal rows for every variant
    assert scores[10:].min() > np.median(scores[:10]), name
    assert all(body["is_anomaly"][10:]), name


def test_vae_export_is_deterministic(server, normal_rows):
    payload = {"instances": normal_rows[:5].tolist()}
    with httpx.Client(base_url=server, timeout=10) as client:
        first = client.post("/models/vae/anomaly-score", json=payload).json()["scores"]
        second = client.post("/models/vae/anomaly-score", json=payload).json()["scores"]
    assert first == second


def test_overcomplete_warning_only_without_regularizer(tmp_path, csv_file):
    data = load_dataset(csv_file, "label")

    def train(variant: str) -> list[warnings.WarningMessage]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", OvercompleteWarning)
            train_and_export(data, TrainOptions(
                name=variant, models_dir=tmp_path, variant=variant, hidden_sizes=[10],
                command="test", train=TrainConfig(epochs=2, progress=False)))
        return [w for w in caught if issubclass(w.category, OvercompleteWarning)]

    plain = train("ae")
    assert len(plain) == 1 and "can learn the identity" in str(plain[0].message)
    assert train("contractive") == []


def test_cli_trains_a_variant_and_prints_the_warning(tmp_path, csv_file):
    from tests.e2e.test_end_to_end import run_cli

    result = run_cli("train", "--data", str(csv_file), "--label-column", "label", "--name", "w",
                     "--hidden", "8", "--epochs", "3", "--quiet", "--models-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "warning: no hidden layer is narrower than the input (narrowest 8 units for 6 " \
        "inputs)" in result.stderr
    result = run_cli("train", "--data", str(csv_file), "--label-column", "label", "--name", "k",
                     "--variant", "sparse-kl", "--activation", "relu", "--epochs", "3",
                     "--quiet", "--models-dir", str(tmp_path))
    assert result.returncode == 2 and "needs sigmoid hidden units" in result.stderr
    result = run_cli("train", "--data", str(csv_file), "--label-column", "label", "--name", "v",
                     "--variant", "vae", "--vae-score", "elbo", "--beta", "0.5", "--epochs", "3",
                     "--quiet", "--models-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    card = ModelCard.read(tmp_path / "v" / "1" / "model.json")
    assert card.hyperparameters["vae_beta"] == 0.5 and card.score.kind == "neg_elbo_scaled"


def test_cli_data_errors_name_file_line_column_and_value(tmp_path):
    from tests.e2e.test_end_to_end import run_cli

    rows = "\n".join(f"{i % 11};{i * 0.5};{i % 7}" for i in range(300))
    good = tmp_path / "semicolons.csv"
    good.write_text("a;b;c\n" + rows + "\n")
    result = run_cli("train", "--data", str(good), "--name", "s", "--epochs", "2", "--quiet",
                     "--models-dir", str(tmp_path / "models"))
    assert result.returncode == 0, result.stderr
    assert ModelCard.read(tmp_path / "models" / "s" / "1" / "model.json").feature_names == [
        "a", "b", "c"]
    bad = tmp_path / "bad.csv"
    bad.write_text("a;b;c\n" + rows.replace("6;8.5;3", "6;n/a;3") + "\n")
    for extra, message in (
            ((), "bad.csv: column 'b' is not numeric: line 19 holds 'n/a'"),
            (("--na-values", "", "n/a"), "bad.csv: column 'b' has 1 missing values, the first "
                                         "at line 19")):
        result = run_cli("train", "--data", str(bad), "--name", "b", "--quiet", *extra,
                         "--models-dir", str(tmp_path / "models"))
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_cli_refuses_a_label_or_index_used_as_a_feature_and_records_the_columns(tmp_path):
    from tests.e2e.test_end_to_end import run_cli

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    labels = (rng.random(60) < 0.1).astype(int)
    path = tmp_path / "labelled.csv"
    lines = [",mean,spread,is_anomaly,sensor,site"] + [
        f"{i},{x[0]:.4f},{x[1]:.4f},{y},{x[2]:.4f},north" for i, (x, y) in enumerate(
            zip(X, labels, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    common = ("--data", str(path), "--epochs", "2", "--quiet", "--models-dir",
              str(tmp_path / "models"))
    result = run_cli("train", "--name", "a", *common)
    assert result.returncode == 2 and "column 'site' is not numeric: line 2 holds 'north' (an " \
        "id? --id-column 'site'; not a feature? --drop-columns 'site')" in result.stderr
    result = run_cli("train", "--name", "a", *common, "--drop-columns", "site")
    assert result.returncode == 2
    assert "column 'is_anomaly' looks like a label" in result.stderr
    assert "column '' looks like a row index" in result.stderr
    result = run_cli("train", "--name", "b", *common, "--label-column", "is_anomaly",
                     "--id-column", "", "--drop-columns", "site")
    assert result.returncode == 0, result.stderr
    card = ModelCard.read(tmp_path / "models" / "b" / "1" / "model.json")
    assert card.feature_names == ["mean", "spread", "sensor"]
    assert (card.training.label_column, card.training.id_column) == ("is_anomaly", "")
    assert card.training.columns_dropped == ["site"]
    result = run_cli("train", "--name", "c", *common, "--columns", "mean", "sensor",
                     "--label-column", "is_anomaly")
    assert result.returncode == 0, result.stderr
    card = ModelCard.read(tmp_path / "models" / "c" / "1" / "model.json")
    assert card.feature_names == ["mean", "sensor"]
    assert card.training.columns_dropped == ["", "spread", "site"]
    result = run_cli("train", "--name", "d", *common, "--drop-columns", "nope")
    assert result.returncode == 2 and "no column 'nope'" in result.stderr
