"""In-process onnxruntime throughput, CPU provider vs CUDA provider, on the same model and rows.

Rows/s at several batch sizes, median of repeated runs, for a 64-feature model (64-32-8 encoder
and its mirror, trained for a few epochs on synthetic data) and the shipped breast-cancer model.
Prints a Markdown table; used by bench/gpu_check.sh.

    python bench/provider_throughput.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]


def wide_model(directory: Path) -> Path:
    from aeserve.training.data import Dataset
    from aeserve.training.pipeline import TrainOptions, train_and_export
    from aeserve.training.trainer import TrainConfig

    X = np.random.default_rng(0).normal(size=(4096, 64))
    data = Dataset(X=X, y=None, feature_names=[f"f{i}" for i in range(64)], source="synthetic")
    outcome = train_and_export(data, TrainOptions(
        name="wide", models_dir=directory, hidden_sizes=[32, 8], command="bench",
        train=TrainConfig(epochs=3, progress=False)))
    return outcome.path / "model.onnx"


def rows_per_second(path: Path, provider: str, batch: int, repeats: int) -> float:
    fallback = [] if provider == "CPUExecutionProvider" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), providers=[provider, *fallback])
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"{provider} is not active: {session.get_providers()}")
    width = session.get_inputs()[0].shape[1]
    rows = np.random.default_rng(1).normal(size=(batch, width)).astype(np.float32)
    for _ in range(5):
        session.run(["score"], {"x": rows})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(["score"], {"x": rows})
        times.append(time.perf_counter() - started)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    providers = [p for p in ("CPUExecutionProvider", "CUDAExecutionProvider")
                 if p in ort.get_available_providers()]
    with tempfile.TemporaryDirectory() as tmp:
        models = {"64-32-8 (64 features)": wide_model(Path(tmp)),
                  "breast-cancer (30 features)": ROOT / "models/breast-cancer/1/model.onnx"}
        print("| model | batch | " + " | ".join(f"{p} rows/s" for p in providers)
              + (" | CUDA / CPU |" if len(providers) == 2 else " |"))
        print("|---|---:|" + "---:|" * len(providers) + ("---:|" if len(providers) == 2 else ""))
        for name, path in models.items():
            for batch in (1, 64, 4096, 65536):
                rates = [rows_per_second(path, p, batch, args.repeats) for p in providers]
                ratio = f" {rates[1] / rates[0]:.2f}x |" if len(rates) == 2 else ""
                print(f"| {name} | {batch} | " + " | ".join(f"{r:,.0f}" for r in rates)
                      + " |" + ratio)


if __name__ == "__main__":
    main()
