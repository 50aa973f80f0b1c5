"""Training at scale: wall time, rows per second and peak memory of `aeserve train` as rows grow.

For each size, synthetic rows x 32 features (a 4-dimensional latent manifold mixed into 32
features plus noise, float32, seeded, written as Parquet in row groups of 1M rows, a group at a
time) are trained with the defaults by the real command, `aeserve train --data F.parquet`, in a
fresh process; so are ../shared/data's donors and 16_http. Measured: wall time of the command,
the training loop's rows per second (from the card), and the peak resident memory of the process
tree (sampled every 0.1 s with psutil; the card's `peak_rss_mb`, the kernel's own high-water
mark, beside it). Per-row cost is wall time over rows, and its ratio to the smallest size says
whether time grows linearly. PyOD's AutoEncoder (defaults, its own process, data read from the
same Parquet file) runs side by side up to `--pyod-max-rows`.

    python -m bench.training_scale [--rows 1000000 5000000 20000000] [--datasets 11_donors 16_http]
                                   [--pyod-max-rows 1000000] [--out bench/results/training_scale.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from bench.protocol import DATA_DIR

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parents[1] / "build" / "training_scale"
FEATURES = 32
GROUP_ROWS = 1_000_000
PYOD_FIT = """
import sys
import pyarrow.parquet as pq
import numpy as np
from pyod.models.auto_encoder import AutoEncoder
X = np.column_stack([c.to_numpy() for c in pq.read_table(sys.argv[1]).columns])
AutoEncoder(verbose=0).fit(X)
"""


def synthetic_parquet(rows: int, folder: Path, seed: int = 0) -> Path:
    """Write (once) `rows` synthetic rows as Parquet, one row group of GROUP_ROWS at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / f"synthetic_{rows}x{FEATURES}.parquet"
    if path.is_file():
        return path
    mixing = np.random.default_rng(seed).normal(size=(4, FEATURES)).astype(np.float32)
    names = [f"f{j}" for j in range(FEATURES)]
    partial = path.with_suffix(".partial")
    with pq.ParquetWriter(partial, pa.schema([(n, pa.float32()) for n in names])) as writer:
        for group, start in enumerate(range(0, rows, GROUP_ROWS)):
            rng = np.random.default_rng([seed, group])
            n = min(GROUP_ROWS, rows - start)
            X = (rng.normal(size=(n, 4)).astype(np.float32) @ mixing
                 + 0.1 * rng.normal(size=(n, FEATURES)).astype(np.float32))
            writer.write_table(pa.table(dict(zip(names, X.T, strict=True))))
    partial.rename(path)
    return path


def npz_as_parquet(name: str, folder: Path) -> Path:
    """A data set of ../shared/data as Parquet features (its labels kept as column `y`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / f"{name}.parquet"
    if not path.is_file():
        with np.load(DATA_DIR / f"{name}.npz") as archive:
            X, y = archive["X"], archive["y"].astype(np.int64)
        columns = {f"f{j}": X[:, j] for j in range(X.shape[1])}
        pq.write_table(pa.table({**columns, "y": y}), path)
    return path


def run_measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the process tree of `command`."""
    started = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed: {process.stderr.read().decode()[-2000:]}")
    return wall, peak / 2**20


def measure_aeserve(data: Path, label: str | None, models: Path, spill: str) -> dict:
    command = [sys.executable, "-m", "aeserve.cli", "train", "--data", str(data), "--name",
               data.stem.replace("_", "-").lower(), "--models-dir", str(models), "--quiet",
               "--spill", spill]
    if label:
        command += ["--label-column", label]
    wall, peak = run_measured(command)
    card_path = max((models / command[7]).iterdir(), key=lambda p: int(p.name)) / "model.json"
    training = json.loads(card_path.read_text())["training"]
    return {"wall_s": wall, "peak_mib": peak, "card_peak_mib": training["peak_rss_mb"],
            "rows_per_s": training["rows_per_s"], "epochs": training["epochs_run"],
            "rows_train": training["rows_train"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--datasets", nargs="*", default=["11_donors", "16_http"],
                        help="sets of ../shared/data to train too (none: synthetic only)")
    parser.add_argument("--pyod-max-rows", type=int, default=1_000_000)
    parser.add_argument("--spill", choices=["auto", "always", "never"], default="auto",
                        help="aeserve train's --spill (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS / "training_scale.md")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    lines = []
    smallest = None
    with tempfile.TemporaryDirectory() as models:
        runs = [(f"synthetic {rows:,} x {FEATURES}", rows, synthetic_parquet(rows, WORK), None)
                for rows in sorted(args.rows)]
        for name in args.datasets:
            if (DATA_DIR / f"{name}.npz").is_file():
                with np.load(DATA_DIR / f"{name}.npz") as archive:
                    n = len(archive["y"])
                runs.append((name, n, npz_as_parquet(name, WORK), "y"))
        for label, rows, path, label_column in runs:
            ours = measure_aeserve(path, label_column, Path(models), args.spill)
            per_row_us = ours["wall_s"] / rows * 1e6
            if label.startswith("synthetic") and smallest is None:
                smallest = per_row_us
            ratio = f"{per_row_us / smallest:.2f}" if label.startswith("synthetic") else ""
            pyod = ""
            if rows <= args.pyod_max_rows:
                wall, peak = run_measured([sys.executable, "-c", PYOD_FIT, str(path)])
                pyod = f"{wall:,.0f} s, {peak:,.0f} MiB"
            line = (f"| {label} | {ours['epochs']} | {ours['wall_s']:,.0f} | "
                    f"{ours['rows_per_s']:,.0f} | {per_row_us:.1f} | {ratio} | "
                    f"{ours['peak_mib']:,.0f} | {ours['card_peak_mib']:,.0f} | "
                    f"{os.path.getsize(path) / 2**20:,.0f} | {pyod} |")
            print(line, flush=True)
            lines.append(line)
    header = [
        "# Training at scale", "",
        f"`aeserve train` with the defaults (five cross-fitted members, 20 epochs), Parquet in, "
        f"`--spill {args.spill}`, one process on {psutil.cpu_count()} cores; "
        f"{platform.machine()}, Python "
        f"{platform.python_version()}. Reproduce: `make bench-training` (`python -m "
        "bench.training_scale`). Wall time is the whole command (imports, reading, training, "
        "export, calibration, publication); rows/s is the training loop's, from the card; peak "
        "RSS is the process tree's, sampled, and the card's (the kernel's high-water mark). "
        "The float32 data alone is rows x features x 4 bytes.", "",
        "| data | epochs | wall s | training rows/s | wall us per row | per row vs smallest "
        "| peak RSS MiB | card peak MiB | Parquet MiB | PyOD AutoEncoder (import + fit) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    args.out.write_text("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
