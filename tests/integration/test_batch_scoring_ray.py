"""`aeserve score --engine ray` on a local Ray with 2 CPUs: the local engine's output, row for
row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest

from aeserve.batch.cli import main as score_main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install "
                                        "'aeserve[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory, csv_file: Path) -> Path:
    """The CSV's rows repeated 5 times with small noise (2,100 rows), in two files of uneven row
    groups, the columns shuffled and an id column added."""
    table = pv.read_csv(csv_file)
    rng = np.random.default_rng(3)
    columns = {name: np.concatenate([table.column(name).to_numpy() * (1 + 0.01 * rng.normal(
        size=table.num_rows)) for _ in range(5)]) for name in ["f3", "f0", "f5", "f1", "f4", "f2"]}
    columns["event"] = np.array([f"e{i:05d}" for i in range(5 * table.num_rows)])
    full = pa.table(columns)
    folder = tmp_path_factory.mktemp("ray") / "events"
    folder.mkdir()
    pq.write_table(full.slice(0, 1337), folder / "part-0.parquet", row_group_size=500)
    pq.write_table(full.slice(1337), folder / "part-1.parquet", row_group_size=301)
    return folder


def test_ray_engine_equals_the_local_engine(trained, parquet_folder, tmp_path, local_ray, capsys):
    common = ["--model", str(trained.path), "--data", str(parquet_folder), "--id-column", "event",
              "--keep-columns", "f1", "--top-k", "2", "--quiet"]
    assert score_main([*common, "--out", str(tmp_path / "local.parquet"),
                       "--batch-size", "4096"]) == 0
    assert score_main([*common, "--out", str(tmp_path / "ray.parquet"), "--engine", "ray",
                       "--batch-size", "100"]) == 0
    assert score_main([*common, "--out", str(tmp_path / "ray-folder"), "--engine", "ray"]) == 0
    summaries = capsys.readouterr().out
    local = pq.read_table(tmp_path / "local.parquet")
    assert local.num_rows == 2100 and local.column_names[:3] == ["event", "f1", "score"]
    assert local.column("is_anomaly").to_numpy().sum() > 0
    # one output file: the same rows in the same order, every value equal
    on_ray = pq.read_table(tmp_path / "ray.parquet")
    assert on_ray.column("event").to_pylist() == [f"e{i:05d}" for i in range(2100)]
    assert on_ray.equals(local)
    # a folder written by the workers: the same rows once ordered by id
    folder = pq.read_table(tmp_path / "ray-folder").sort_by("event")
    assert folder.select(local.column_names).cast(local.schema).equals(local)
    anomalies = int(local.column("is_anomaly").to_numpy().sum())
    assert summaries.count(f"anomalies: {anomalies:,} ") == 3
    assert summaries.count("(ray engine)") == 2
