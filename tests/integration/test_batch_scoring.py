"""`aeserve score`: real files in, real ONNX model, every output value checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest

from aeserve.artifact.card import CARD_FILENAME, ONNX_FILENAME
from aeserve.artifact.scores import p_values, percentiles
from aeserve.artifact.session import ModelSession
from aeserve.batch.cli import main as score_main
from aeserve.batch.files import CSVSource, Sink
from aeserve.batch.local import score_file
from aeserve.batch.model import BatchScorer, load_model
from tests.helpers import ROOT


def expected_results(trained, X: np.ndarray) -> dict[str, np.ndarray]:
    """What the model says about X, straight from onnxruntime and the server's functions."""
    session = ModelSession(trained.path / ONNX_FILENAME, trained.card)
    out = session.run(X.astype(np.float32), ("score", "feature_errors"))
    scores = out["score"]
    return {"score": scores, "is_anomaly": scores.astype(np.float64) > trained.card.threshold,
            "percentile": percentiles(scores, trained.card.score_quantiles).round(3),
            "p_value": p_values(scores, trained.card.score_quantiles),
            "feature_errors": out["feature_errors"]}


@pytest.fixture(scope="module")
def rows(csv_file: Path) -> pa.Table:
    return pv.read_csv(csv_file)


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory, rows: pa.Table) -> Path:
    """The CSV's rows with an id column, the features in reverse order, in row groups of 64."""
    table = rows.select(["label", *reversed([f"f{i}" for i in range(6)])])
    table = table.append_column("row_id", pa.array(np.arange(rows.num_rows) + 1000))
    path = tmp_path_factory.mktemp("parquet") / "sensors.parquet"
    pq.write_table(table, path, row_group_size=64)
    return path


def features(table: pa.Table) -> np.ndarray:
    return np.column_stack([table.column(f"f{i}").to_numpy() for i in range(6)])


def test_csv_scores_equal_onnxruntime_and_the_server_functions(trained, csv_file, rows, tmp_path,
                                                               capsys):
    out = tmp_path / "scores.csv"
    assert score_main(["--model", str(trained.path), "--data", str(csv_file), "--out", str(out),
                       "--id-column", "label", "--quiet"]) == 0
    result = pv.read_csv(out)
    assert result.column_names == ["label", "score", "is_anomaly", "percentile", "p_value"]
    expected = expected_results(trained, features(rows))
    assert result.num_rows == rows.num_rows == 420
    np.testing.assert_array_equal(result.column("score").to_numpy().astype(np.float32),
                                  expected["score"])
    np.testing.assert_array_equal(result.column("is_anomaly").to_numpy(), expected["is_anomaly"])
    np.testing.assert_array_equal(result.column("percentile").to_numpy(), expected["percentile"])
    np.testing.assert_allclose(result.column("p_value").to_numpy(), expected["p_value"],
                               rtol=1e-12)
    # the id column is copied as the file's text; the far rows at the end are the anomalies
    assert out.read_text().splitlines()[-1].startswith('"1",')
    assert result.column("label").to_pylist() == [0] * 400 + [1] * 20
    assert result.column("is_anomaly").to_numpy()[-20:].all()
    summary = capsys.readouterr().out
    assert "scored 420 rows in" in summary
    flagged = int(expected["is_anomaly"].sum())
    assert f"anomalies: {flagged} ({100 * flagged / 420:.2f} %)" in summary
    assert not (tmp_path / "scores.csv.partial").exists()


def test_parquet_columns_matched_by_name_in_batches(trained, parquet_file, rows, tmp_path):
    out = tmp_path / "scores.parquet"
    assert score_main(["--model", str(trained.path.parent), "--data", str(parquet_file),
                       "--out", str(out), "--id-column", "row_id", "--top-k", "2",
                       "--batch-size", "50", "--workers", "2", "--quiet"]) == 0
    result = pq.read_table(out)
    assert result.column_names == ["row_id", "score", "is_anomaly", "percentile", "p_value",
                                   "top1_feature", "top1_error", "top2_feature", "top2_error"]
    assert result.column("row_id").to_pylist() == list(range(1000, 1420))  # input order kept
    expected = expected_results(trained, features(rows))
    np.testing.assert_array_equal(result.column("score").to_numpy(), expected["score"])
    np.testing.assert_array_equal(result.column("percentile").to_numpy(), expected["percentile"])
    errors = expected["feature_errors"]
    order = np.argsort(-errors, axis=1, kind="stable")
    names = np.array(trained.card.feature_names)
    assert result.column("top1_feature").to_pylist() == names[order[:, 0]].tolist()
    assert result.column("top2_feature").to_pylist() == names[order[:, 1]].tolist()
    np.testing.assert_array_equal(result.column("top1_error").to_numpy(), errors.max(axis=1))
    assert (result.column("top1_error").to_numpy() >= result.column("top2_error").to_numpy()).all()


def test_csv_read_in_small_blocks_gives_the_same_file(trained, csv_file, tmp_path):
    loaded = load_model(trained.path)
    scorer = BatchScorer(loaded.card, loaded.entry.session, top_k=1)
    outputs = []
    for block_bytes, workers in ((1 << 20, 1), (2048, 2)):
        out = tmp_path / f"scores-{block_bytes}.parquet"
        source = CSVSource(csv_file, loaded.card.feature_names, (), block_bytes=block_bytes)
        batches = sum(1 for _ in CSVSource(csv_file, loaded.card.feature_names, (),
                                           block_bytes=block_bytes).batches())
        summary = score_file(scorer, source, Sink(out), progress=False, workers=workers)
        assert summary.rows == 420
        outputs.append((batches, pq.read_table(out)))
    assert outputs[0][0] == 1 and outputs[1][0] > 5  # one block, then many
    assert outputs[0][1].equals(outputs[1][1])


@pytest.mark.parametrize("case, message", [
    ("missing", "lacks columns ['f3']"),
    ("text", "cannot parse"),
    ("empty_cell", "column 'f2' has a missing value in row 3"),
    ("huge", "non-finite value in row 1, column 'f0'"),
])
def test_bad_data_is_named_and_leaves_no_output(trained, tmp_path, capsys, case, message):
    header = [f"f{i}" for i in range(6)]
    lines = [[str(float(i + j)) for j in range(6)] for i in range(5)]
    if case == "missing":
        header.remove("f3")
        lines = [line[:5] for line in lines]
    elif case == "text":
        lines[2][1] = "high"
    elif case == "empty_cell":
        lines[3][2] = ""
    elif case == "huge":
        lines[1][0] = "1e300"
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(",".join(line) for line in [header, *lines]) + "\n")
    out = tmp_path / "out.csv"
    assert score_main(["--model", str(trained.path), "--data", str(data), "--out", str(out),
                       "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [data]


def test_newest_version_that_loads_is_used(trained, csv_file, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(trained.path, models / "sensors" / "1")
    broken = models / "sensors" / "2"
    shutil.copytree(trained.path, broken)
    (broken / CARD_FILENAME).write_text(trained.card.model_copy(update={"version": 2}).to_json())
    (broken / ONNX_FILENAME).write_bytes(b"not a graph")
    out = tmp_path / "out.csv"
    assert score_main(["--model", str(models / "sensors"), "--data", str(csv_file),
                       "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "sensors version 2 skipped: sha256" in captured.err
    assert "with sensors version 1 (local engine)" in captured.out
    assert score_main(["--model", str(broken), "--data", str(csv_file), "--out", str(out)]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_empty_input_gives_an_empty_result_file(trained, tmp_path):
    data = tmp_path / "empty.csv"
    data.write_text(",".join(f"f{i}" for i in range(6)) + ",id\n")
    out = tmp_path / "out.parquet"
    assert score_main(["--model", str(trained.path), "--data", str(data), "--out", str(out),
                       "--id-column", "id", "--quiet"]) == 0
    result = pq.read_table(out)
    assert result.num_rows == 0
    assert result.column_names == ["id", "score", "is_anomaly", "percentile", "p_value"]


def test_kept_columns_travel_with_their_rows_and_never_clash(trained, csv_file, tmp_path):
    table = pv.read_csv(csv_file)
    n = table.num_rows
    labelled = table.rename_columns([*table.column_names[:-1], "is_anomaly"]).append_column(
        "site", pa.array([f"s{i % 3:02d}" for i in range(n)]))
    for suffix, writer in ((".csv", pv.write_csv), (".parquet", pq.write_table)):
        data = tmp_path / f"labelled{suffix}"
        writer(labelled, data)
        out = tmp_path / f"out{suffix}.parquet"
        assert score_main(["--model", str(trained.path), "--data", str(data), "--out", str(out),
                           "--id-column", "is_anomaly", "--keep-columns", "site", "f0",
                           "--batch-size", "64", "--quiet"]) == 0
        result = pq.read_table(out)
        assert result.column_names == ["is_anomaly_input", "site", "f0", "score", "is_anomaly",
                                       "percentile", "p_value"]
        # the label beside the model's verdict, row for row; CSV columns as the file's text
        labels = result.column("is_anomaly_input").to_pylist()
        assert [int(v) for v in labels] == [0] * 400 + [1] * 20
        assert result.column("site").to_pylist() == [f"s{i % 3:02d}" for i in range(n)]
        # a kept feature comes as the number the model read
        assert result.column("f0").to_pylist() == labelled.column("f0").to_pylist()
        assert result.column("is_anomaly").to_pylist()[-20:].count(True) >= 19


def test_the_aeserve_command_scores_without_torch(trained, csv_file, tmp_path):
    out = tmp_path / "out.csv"
    code = ("import sys; from aeserve.cli import main; "
            f"rc = main(['score', '--model', {str(trained.path)!r}, '--data', "
            f"{str(csv_file)!r}, '--out', {str(out)!r}, '--quiet']); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "scored 420 rows" in done.stdout
    assert pv.read_csv(out).num_rows == 420


@pytest.fixture(scope="module")
def single_network(tmp_path_factory, csv_file):
    """The model of `trained` as one network: its graph keeps rows as rows ([N, d])."""
    from aeserve.training.data import load_dataset
    from aeserve.training.pipeline import TrainOptions, train_and_export
    from aeserve.training.trainer import TrainConfig

    options = TrainOptions(name="single", models_dir=tmp_path_factory.mktemp("single"),
                           hidden_sizes=[16, 4], members=1,
                           train=TrainConfig(epochs=30, seed=0, progress=False), command="test")
    return train_and_export(load_dataset(csv_file, "label"), options)


@pytest.mark.parametrize("model", ["trained", "single_network"])
def test_scores_do_not_depend_on_where_the_input_is_cut(model, rows, request):
    """Any cut gives every row the bits of one run. A single network's graph rounds a row's
    values by their offset in the buffer and in its last, partial vector, so its runs are
    aligned at both ends; members' graphs do not (tests/unit/training/
    test_member_convolutions.py)."""
    loaded = load_model(request.getfixturevalue(model).path)
    scorer = BatchScorer(loaded.card, loaded.entry.session, top_k=1)
    whole = scorer.score(rows)
    rng = np.random.default_rng(0)
    for _ in range(40):
        start, stop = sorted(rng.choice(np.arange(1, rows.num_rows), size=2, replace=False))
        pieces = [scorer.score(rows.slice(a, b - a), first_row=a)
                  for a, b in ((0, start), (start, stop), (stop, rows.num_rows))]
        assert pa.concat_tables(pieces).equals(whole)


def test_no_rows_give_empty_outputs_of_the_models_widths(trained):
    session = ModelSession(trained.path / ONNX_FILENAME, trained.card)
    out = session.run(np.empty((0, 6), dtype=np.float32), ("embedding", "score", "reconstruction"))
    assert out["embedding"].shape == (0, trained.card.architecture.embedding_dim)
    assert out["score"].shape == (0,) and out["reconstruction"].shape == (0, 6)
    assert {values.dtype for values in out.values()} == {np.dtype(np.float32)}
