"""A user's wall time to train: `aeserve train` against PyOD's AutoEncoder, one thread each.

For each data set (the benchmark's protocol rows of seed 0's one-class split, written to CSV), both
run in a fresh process, as a user would run them: the whole `aeserve train` command (imports,
reading the CSV, training with the defaults, export, parity check, calibration, publication)
against a Python process that imports PyOD and fits `AutoEncoder()` with its defaults on the same
CSV. One thread for both (OMP_NUM_THREADS=1 and torch's intra-op threads); the median of
`--repeats` runs each, alternating.

    python -m bench.train_time [--datasets 6_cardio 30_satellite 11_donors] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.protocol import GROUPS, dataset_paths, group_of, splits

RESULTS = Path(__file__).resolve().parent / "results"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "OPENBLAS_NUM_THREADS": "1"}
PYOD_FIT = """
import sys, torch
torch.set_num_threads(1)
import pandas as pd
from pyod.models.auto_encoder import AutoEncoder
X = pd.read_csv(sys.argv[1]).to_numpy()
AutoEncoder(verbose=0).fit(X)
"""


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=ENV, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(dataset: str, repeats: int, folder: Path) -> dict:
    split = next(splits(dataset_paths(only=[dataset])[0], (0,), ("one-class",)))
    csv = folder / f"{dataset}.csv"
    pd.DataFrame(split.X_fit, columns=[f"f{i}" for i in range(split.X_fit.shape[1])]).to_csv(
        csv, index=False)
    ours, theirs = [], []
    for i in range(repeats):
        ours.append(timed([sys.executable, "-m", "aeserve.cli", "train", "--data", str(csv),
                           "--name", f"t{i}", "--models-dir", str(folder / "models"),
                           "--quiet"]))
        theirs.append(timed([sys.executable, "-c", PYOD_FIT, str(csv)]))
    return {"dataset": dataset, "rows": len(split.X_fit), "features": split.X_fit.shape[1],
            "aeserve_s": statistics.median(ours), "pyod_s": statistics.median(theirs),
            "ratio": float(np.median(np.array(ours) / np.array(theirs)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["6_cardio", "30_satellite",
                                                          "11_donors"],
                        help="data sets by name, or `all`: every development set")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_time.md")
    args = parser.parse_args()
    given = list(args.datasets)
    if args.datasets == ["all"]:
        args.datasets = [path.stem for path in dataset_paths()]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, args.repeats, Path(tmp)) for name in args.datasets]
    reproduce = f"--datasets {' '.join(given)} --repeats {args.repeats}"
    runs = "one run each" if args.repeats == 1 else f"median of {args.repeats} runs each"
    lines = ["# Wall time to train, for a user", "",
             "The whole `aeserve train` command (defaults) against a process that imports PyOD and "
             "fits `AutoEncoder()` (defaults) on the same CSV: seed 0's one-class training rows "
             f"of the quality protocol. One thread each, fresh processes, "
             f"{runs}, alternating; {platform.machine()}, Python "
             f"{platform.python_version()}. Reproduce: "
             f"`python -m bench.train_time {reproduce}`.", "",
             "| data set | rows | features | aeserve train s | PyOD import + fit s | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['dataset']} | {r['rows']:,} | {r['features']} | {r['aeserve_s']:.2f} | "
              f"{r['pyod_s']:.2f} | {r['ratio']:.2f} |" for r in rows]
    if len(rows) > 1:
        ratios = {group: [r["ratio"] for r in rows if group_of(r["dataset"]) == group]
                  for group in GROUPS}
        everything = [r["ratio"] for r in rows]
        lines += ["", "| ratio (aeserve / PyOD) | median | largest |", "|---|---:|---:|"]
        lines += [f"| {group} sets | {statistics.median(v):.2f} | {max(v):.2f} |"
                  for group, v in ratios.items() if v]
        lines.append(f"| all {len(rows)} | {statistics.median(everything):.2f} | "
                     f"{max(everything):.2f} |")
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
