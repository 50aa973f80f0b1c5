"""Spilled against in-memory training: do they give models of equal quality?

A spilled data set (training/spill.py) is shuffled a buffer of rows at a time instead of whole,
each buffer made of 64 runs of consecutive rows from random places (trainer.py, `_block_order`).
On the quality protocol's splits (bench/protocol.py: seeds 0-2, up to 20,000 rows), the training
part is written to Parquet and trained twice by the real pipeline, with the split's seed: in
memory, and spilled with buffers of `--block-rows` rows (4,096: several buffers per set, where
the product's 2**20-row buffers would hold these sets whole and give the very same model).
ROC-AUC on the test part, through the exported graph: the mean over seeds of each, and the
difference of the means.

    python -m bench.spill_parity [--datasets 11_donors 33_skin 8_celeba] [--block-rows 4096]
                                 [--seeds 0 1 2]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from aeserve.training.data import load_dataset  # noqa: E402
from aeserve.training.pipeline import TrainOptions, train_and_export  # noqa: E402
from aeserve.training.trainer import TrainConfig  # noqa: E402
from bench.protocol import dataset_paths, splits  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def roc_auc(data, X_test, y_test, folder: Path, name: str, block: int, seed: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = train_and_export(data, TrainOptions(
            name=name, models_dir=folder, command="bench/spill_parity.py",
            train=TrainConfig(seed=seed, progress=False, shuffle_block_rows=block)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(outcome.path / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    scores = session.run(["score"], {"x": X_test.astype(np.float32)})[0]
    return float(roc_auc_score(y_test, scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["11_donors", "33_skin", "8_celeba"])
    parser.add_argument("--settings", nargs="+", default=["one-class", "unsupervised"])
    parser.add_argument("--block-rows", type=int, default=4096)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "spill_parity.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["# Spilled against in-memory training", "",
             f"ROC-AUC on the test part, mean over seeds {', '.join(map(str, args.seeds))} "
             "(each seed its own split and training), the default `aeserve train`; spilled: the "
             f"training rows in a mapped file, shuffled in buffers of {args.block_rows:,} rows "
             "(64 runs of consecutive rows each). Reproduce: `python -m bench.spill_parity`.", "",
             "| data set | setting | training rows | in memory | spilled | difference | "
             "difference per seed |",
             "|---|---|---:|---:|---:|---:|---|"]
    summary: dict[str, list[float]] = {}
    for path in dataset_paths(only=args.datasets):
        for setting in args.settings:
            memory_aucs, spilled_aucs, rows = [], [], 0
            for split in splits(path, tuple(args.seeds), (setting,)):
                with tempfile.TemporaryDirectory() as folder:
                    folder = Path(folder)
                    names = [f"f{j}" for j in range(split.X_fit.shape[1])]
                    pq.write_table(pa.table(dict(zip(names, split.X_fit.T, strict=True))),
                                   folder / "train.parquet", row_group_size=4096)
                    (folder / "spill").mkdir()
                    memory = load_dataset(folder / "train.parquet")
                    spilled = load_dataset(folder / "train.parquet", spill="always",
                                           spill_dir=folder / "spill")
                    spilled_aucs.append(roc_auc(spilled, split.X_test, split.y_test,
                                                folder / "models", "s", args.block_rows,
                                                split.seed))
                    memory_aucs.append(roc_auc(memory, split.X_test, split.y_test,
                                               folder / "models", "m", 0, split.seed))
                rows = len(split.X_fit)
            difference = float(np.mean(spilled_aucs) - np.mean(memory_aucs))
            summary.setdefault(setting, []).append(difference)
            per_seed = ", ".join(f"{a - b:+.4f}" for a, b in zip(spilled_aucs, memory_aucs,
                                                                   strict=True))
            line = (f"| {path.stem} | {setting} | {rows:,} | {np.mean(memory_aucs):.4f} | "
                    f"{np.mean(spilled_aucs):.4f} | {difference:+.4f} | {per_seed} |")
            print(line, flush=True)
            lines.append(line)
    lines.append("")
    for setting, differences in summary.items():
        lines.append(f"{setting}: largest absolute difference of the means "
                     f"{np.max(np.abs(differences)):.4f}, mean difference "
                     f"{np.mean(differences):+.4f}.")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
