"""Where a default model's scoring time goes: onnxruntime's own profile, by operator type.

The graphs are those of bench/model_cost.py (exported exactly as `aeserve train` exports them, 64
features, untrained: cost does not depend on the weights): the default members and score, and the
reference 64-32-8 network. One onnxruntime thread, the `score` output only, batches of 4,096 rows
and of 1 row; each kernel's time summed by operator type over the profiled runs, per run. It says
which part of the graph a cheaper default has to remove.

    python -m bench.model_profile [--runs 30] [--out bench/results/model_profile.md]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from bench.model_cost import CANDIDATES, FEATURES, REFERENCE, RESULTS, Candidate, export  # noqa: E402


def profile(candidate: Candidate, folder: Path, rows: np.ndarray, runs: int) -> Counter:
    """Microseconds per run spent in each operator type (onnxruntime's kernel times)."""
    session = export(candidate, folder, profile=True)
    for _ in range(runs):  # the first run's allocations are averaged in
        session.run(["score"], {"x": rows})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: Counter = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"].get("op_name", "?")] += event["dur"] / runs
    return by_op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS / "model_profile.md")
    args = parser.parse_args()
    default = CANDIDATES[0]
    lines = ["# Where a default model's scoring time goes", "",
             f"onnxruntime {ort.__version__} profile, one thread, `score` output only, "
             f"{FEATURES} features, {args.runs} runs per batch size; microseconds per run by "
             f"operator type. {platform.machine()}, Python {platform.python_version()}. "
             "Reproduce: `python -m bench.model_profile`.", ""]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (4096, 1):
            rows = rng.normal(size=(batch, FEATURES)).astype(np.float32)
            ours = profile(default, Path(tmp), rows, args.runs)
            reference = profile(REFERENCE, Path(tmp), rows, args.runs)
            lines += [f"## {batch} rows", "",
                      f"| operator | {default.label} | {REFERENCE.label} |", "|---|---:|---:|"]
            for op in sorted(set(ours) | set(reference), key=lambda o: -ours.get(o, 0.0)):
                lines.append(f"| {op} | {ours.get(op, 0.0):,.1f} | {reference.get(op, 0.0):,.1f} |")
            lines += [f"| **total** | **{sum(ours.values()):,.1f}** | "
                      f"**{sum(reference.values()):,.1f}** |", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
