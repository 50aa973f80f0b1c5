"""Windowed models on real time series: detection quality against the row model and peers.

Two real recordings that sktime ships (no download), each turned into an anomaly task the same
way every run:

- **BasicMotions** (multivariate): 80 smartwatch recordings, 100 readings of 6 channels
  (accelerometer and gyroscope x, y, z) each, of four activities. Normal: standing and walking;
  anomalous: running and badminton. One-class: the models learn the normal recordings of the
  TRAIN split; the TEST split's recordings are scored, each recording its own series.
- **MIT-BIH** (`mitdb`, one ECG lead, 7,500 readings, 352 labelled anomalous, all in one episode
  near the end): the models learn the first 60 % of the recording, which holds none of the
  labelled readings (one-class in effect), and score the rest.

Detectors, each scoring the same readings (those with a full window behind them):
`aeserve train --window W` (the defaults otherwise), the row model (`aeserve train` on single
readings), and PyOD's KNN and IsolationForest fitted on the same standardized windows. One window
length for both sets, `--window` (default 16), not tuned per set. Seeds 0-2 (the autoencoders'
and IsolationForest's); ROC-AUC and average precision over the scored readings.

    python -m bench.stream_quality [--window 16] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from aeserve.artifact.windows import flatten, series_order, window_rows

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Task:
    """A time-series task: readings with a series id, in time order within each series."""

    name: str
    setting: str
    train: pd.DataFrame  # columns: series, t, the channels
    test: pd.DataFrame  # the same, and label
    channels: list[str]


def basic_motions() -> Task:
    from sktime.datasets import load_basic_motions

    frames = {}
    for split in ("train", "test"):
        X, y = load_basic_motions(split=split, return_type="numpy3D")
        rows = []
        for i, (recording, activity) in enumerate(zip(X, y, strict=True)):
            for t in range(recording.shape[1]):
                rows.append([f"{split}{i}", t, *recording[:, t],
                             int(activity in ("running", "badminton"))])
        frames[split] = pd.DataFrame(rows, columns=["series", "t", "acc_x", "acc_y", "acc_z",
                                                    "gyr_x", "gyr_y", "gyr_z", "label"])
    train = frames["train"][frames["train"].label == 0].drop(columns="label")
    return Task("BasicMotions", "one-class", train, frames["test"],
                ["acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"])


def mitdb() -> Task:
    import importlib.resources

    path = importlib.resources.files("sktime.datasets") / "data" / "mitdb" / "mitdb.csv"
    data = pd.read_csv(path)
    frame = pd.DataFrame({"series": "ecg", "t": np.arange(len(data)), "ecg": data["data"],
                          "label": data["label"].astype(int)})
    cut = int(0.6 * len(frame))
    return Task("MIT-BIH", "one-class", frame.iloc[:cut].drop(columns="label"),
                frame.iloc[cut:], ["ecg"])


def train(task: Task, folder: Path, seed: int, window: int | None) -> Path:
    """`aeserve train` as a user runs it, on the task's training readings; the version folder."""
    csv = folder / f"{task.name}.csv"
    task.train.to_csv(csv, index=False)
    name = f"{task.name.lower().replace('-', '')}-{'w' if window else 'row'}-{seed}"
    extra = (["--window", str(window), "--series-column", "series", "--time-column", "t"]
             if window else ["--drop-columns", "series", "t"])
    subprocess.run([sys.executable, "-m", "aeserve.cli", "train", "--data", str(csv), "--name",
                    name, "--models-dir", str(folder / "models"), "--seed", str(seed),
                    "--quiet", *extra], check=True, stdout=subprocess.DEVNULL)
    return folder / "models" / name / "1"


def test_windows(task: Task, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows [n, W * d], each window's last reading [n, d], its label [n]) of the test part."""
    test = task.test
    X = test[task.channels].to_numpy(np.float32)
    rows = window_rows(*series_order(test["series"].to_numpy(), test["t"].to_numpy(), len(X)),
                       window)
    return flatten(X, rows), X[rows[:, -1]], test["label"].to_numpy()[rows[:, -1]]


def train_windows(task: Task, window: int) -> np.ndarray:
    train = task.train
    X = train[task.channels].to_numpy(np.float32)
    rows = window_rows(*series_order(train["series"].to_numpy(), train["t"].to_numpy(), len(X)),
                       window)
    return flatten(X, rows)


def scores(version: Path, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(version / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(["score"], {"x": X})[0]


def peers(fit: np.ndarray, test: np.ndarray, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN

    mean, spread = fit.mean(axis=0), fit.std(axis=0) + 1e-9
    fit_z, test_z = (fit - mean) / spread, (test - mean) / spread
    for name, detector in (("knn (windows)", KNN()),
                           ("iforest (windows)", IForest(random_state=seed))):
        detector.fit(fit_z)
        yield name, detector.decision_function(test_z)


def run(window: int, seeds: list[int]) -> pd.DataFrame:
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for task in (basic_motions(), mitdb()):
            windows, last, labels = test_windows(task, window)
            fit = train_windows(task, window)
            for seed in seeds:
                results = {
                    f"aeserve --window {window}": scores(train(task, folder, seed, window),
                                                         windows),
                    "aeserve (rows)": scores(train(task, folder, seed, None), last),
                    **dict(peers(fit, windows, seed)),
                }
                for detector, s in results.items():
                    records.append({"dataset": task.name, "setting": task.setting,
                                    "detector": detector, "seed": seed,
                                    "roc_auc": roc_auc_score(labels, s),
                                    "average_precision": average_precision_score(labels, s),
                                    "readings": len(labels), "anomalous": int(labels.sum())})
                print(task.name, seed, {d: round(r["roc_auc"], 3) for d, r in zip(
                    results, records[-len(results):], strict=True)}, flush=True)
    return pd.DataFrame.from_records(records)


def report(frame: pd.DataFrame, window: int, seeds: list[int]) -> str:
    table = frame.groupby(["dataset", "setting", "detector"], sort=False).agg(
        roc_auc=("roc_auc", "mean"), average_precision=("average_precision", "mean"),
        readings=("readings", "first"), anomalous=("anomalous", "first")).reset_index()
    lines = ["# Windowed models on real time series", "",
             f"`python -m bench.stream_quality --window {window}` (seeds {seeds}; "
             f"{platform.machine()}, Python {platform.python_version()}). Mean over seeds; every "
             "detector scores the same readings (those with a full window). bench/stream_quality"
             ".py says how the tasks are made.", "",
             "| data set | setting | detector | ROC-AUC | AP | readings (anomalous) |",
             "|---|---|---|---:|---:|---:|"]
    for row in table.itertuples():
        lines.append(f"| {row.dataset} | {row.setting} | {row.detector} | {row.roc_auc:.3f} | "
                     f"{row.average_precision:.3f} | {row.readings} ({row.anomalous}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "stream_quality.md")
    args = parser.parse_args()
    frame = run(args.window, args.seeds)
    text = report(frame, args.window, args.seeds)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
