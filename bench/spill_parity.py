"""Spilled against in-memory training: do they give models of equal quality?

A spilled data set (training/spill.py) is shuffled a block of rows at a time instead of whole.
On the quality protocol's splits (bench/protocol.py: seed 0, up to 20,000 rows), the training
part is written to Parquet and trained twice by the real pipeline: in memory, and spilled with
shuffle blocks of `--block-rows` (4,096: several blocks per set, where the product's 2**20-row
blocks would hold these sets whole and give the very same model). ROC-AUC on the test part,
through the exported graph, and the difference; beside it, the noise floor: the same in-memory
training with the next seed, which changes the order of the rows as much as the blocks do.

    python -m bench.spill_parity [--datasets 11_donors 33_skin 8_celeba] [--block-rows 4096]
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
    parser.add_argument("--out", type=Path, default=RESULTS / "spill_parity.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["# Spilled against in-memory training", "",
             f"ROC-AUC on the test part (seed 0), the default `aeserve train`; spilled: the "
             f"training rows in a mapped file, shuffled in blocks of {args.block_rows:,} rows. "
             "Reproduce: `python -m bench.spill_parity`.", "",
             "| data set | setting | training rows | in memory | spilled | difference | next "
             "seed, in memory |",
             "|---|---|---:|---:|---:|---:|---:|"]
    differences, floors = [], []
    for path in dataset_paths(only=args.datasets):
        for split in splits(path, (0,), tuple(args.settings)):
            with tempfile.TemporaryDirectory() as folder:
                folder = Path(folder)
                names = [f"f{j}" for j in range(split.X_fit.shape[1])]
                pq.write_table(pa.table(dict(zip(names, split.X_fit.T, strict=True))),
                               folder / "train.parquet", row_group_size=4096)
                (folder / "spill").mkdir()
                memory = load_dataset(folder / "train.parquet")
                spilled = load_dataset(folder / "train.parquet", spill="always",
                                       spill_dir=folder / "spill")
                ours = roc_auc(spilled, split.X_test, split.y_test, folder / "models", "s",
                               args.block_rows, split.seed)
                base = roc_auc(memory, split.X_test, split.y_test, folder / "models", "m", 0,
                               split.seed)
                reseeded = roc_auc(memory, split.X_test, split.y_test, folder / "models", "r",
                                   0, split.seed + 1)
            differences.append(ours - base)
            floors.append(reseeded - base)
            line = (f"| {split.dataset} | {split.setting} | {len(split.X_fit):,} | {base:.4f} | "
                    f"{ours:.4f} | {ours - base:+.4f} | {reseeded - base:+.4f} |")
            print(line, flush=True)
            lines.append(line)
    lines += ["", f"Mean absolute difference: spilled {np.mean(np.abs(differences)):.4f}, next "
              f"seed {np.mean(np.abs(floors)):.4f}; mean difference: spilled "
              f"{np.mean(differences):+.4f}."]
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
