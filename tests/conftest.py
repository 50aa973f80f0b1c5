"""Shared fixtures, and the tier of each test: its folder under tests/ is its marker.

    tests/unit/<part>/   unit         one part, no server process (`make test-fast`: -m unit)
    tests/integration/   integration  a real server on 127.0.0.1, real files, parts together
    tests/e2e/           e2e          the command line and the docs' commands, as a user runs them
    tests/container/     container    the serving image (RUN_CONTAINER_TESTS=1, a docker daemon)
    tests/gpu/           gpu          an NVIDIA GPU and onnxruntime-gpu (skip elsewhere)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, manifold_data

TIERS = ("unit", "integration", "e2e", "container", "gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(item.fspath).relative_to(ROOT / "tests").parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: every test lives in a tier folder {TIERS}")
        item.add_marker(tier)


@pytest.fixture(scope="session")
def normal_rows() -> np.ndarray:
    return manifold_data()


@pytest.fixture(scope="session")
def csv_file(tmp_path_factory: pytest.TempPathFactory, normal_rows: np.ndarray) -> Path:
    """A CSV with six features and a 0/1 `label` column (last 20 rows anomalous)."""
    from tests.helpers import far_rows

    anomalies = far_rows(normal_rows)
    X = np.vstack([normal_rows, anomalies])
    y = np.r_[np.zeros(len(normal_rows)), np.ones(len(anomalies))]
    path = tmp_path_factory.mktemp("data") / "sensors.csv"
    header = ",".join([f"f{i}" for i in range(X.shape[1])] + ["label"])
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="",
               fmt="%.8g")
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, csv_file: Path):
    """One small model trained and exported through the pipeline (a few seconds on a CPU)."""
    from aeserve.training.data import load_dataset
    from aeserve.training.pipeline import TrainOptions, train_and_export
    from aeserve.training.trainer import TrainConfig

    models_dir = tmp_path_factory.mktemp("models")
    options = TrainOptions(name="sensors", models_dir=models_dir, hidden_sizes=[16, 4],
                           train=TrainConfig(epochs=300, seed=0, progress=False),
                           command="test")
    return train_and_export(load_dataset(csv_file, "label"), options)


@pytest.fixture(scope="session")
def windowed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the readings' CSV, the version folder) of a model of windows of 6 readings of three
    machines, one of which has a stuck sensor (tests/helpers.py `machine_readings`)."""
    from aeserve.training.cli import main as training_main
    from tests.helpers import machine_readings

    folder = tmp_path_factory.mktemp("windows")
    data = machine_readings(folder / "machines.csv")
    assert training_main(["train", "--data", str(data), "--name", "machines", "--window", "6",
                          "--series-column", "machine", "--time-column", "time",
                          "--label-column", "label", "--models-dir", str(folder / "models"),
                          "--quiet"]) == 0
    return data, folder / "models" / "machines" / "1"
