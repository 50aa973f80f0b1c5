"""What a default model costs to run: in-process onnxruntime throughput against one small network.

The reference is one 64-32-8 network (the plain autoencoder of BASELINES.md's `mlp_ae`) on 64
features, squared-error score; the candidates are graphs exported exactly as `aeserve train`
exports them, with the default members and score. One onnxruntime thread, batches of 4,096 rows
and of 1 row; candidates and reference run alternately in one process, and the ratio of medians
is reported (cost does not depend on the weights, so the networks are untrained).

    python -m bench.model_cost [--repeats 7] [--out bench/results/model_cost.md]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from aeserve.training import defaults  # noqa: E402
from aeserve.training.export import ScoringGraph, write_onnx  # noqa: E402
from aeserve.training.model import Autoencoder, AutoencoderConfig  # noqa: E402
from aeserve.training.preprocessing import AffineScaler  # noqa: E402

FEATURES = 64
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Candidate:
    label: str
    hidden: tuple[int, ...]
    members: int
    score: str
    #: The graph cut down to what its `score` output needs (onnx.utils.extract_model):
    #: onnxruntime runs every node of a graph whatever outputs a run asks for.
    score_only: bool = False


REFERENCE = Candidate("one 64-32-8 network, squared error (reference)", (64, 32, 8), 1,
                      "mse_scaled")
CANDIDATES = (
    Candidate("default: {m} members of {h}, {s}".format(
        m=defaults.MEMBERS, h="-".join(map(str, defaults.HIDDEN_SIZES)), s=defaults.SCORE),
        defaults.HIDDEN_SIZES, defaults.MEMBERS, defaults.SCORE),
    Candidate("default members, squared error", defaults.HIDDEN_SIZES, defaults.MEMBERS,
              "mse_scaled"),
    Candidate("one 64-32-8 network, residual_cauchy", (64, 32, 8), 1, "residual_cauchy"),
    Candidate("5 members of 32-16-8, residual_cauchy", (32, 16, 8), 5, "residual_cauchy"),
    Candidate("3 members of 32-16-8, residual_cauchy", (32, 16, 8), 3, "residual_cauchy"),
    Candidate("5 members of 16-8, residual_cauchy", (16, 8), 5, "residual_cauchy"),
    Candidate("default, graph cut to its score output", defaults.HIDDEN_SIZES, defaults.MEMBERS,
              defaults.SCORE, score_only=True),
    Candidate("reference, graph cut to its score output", (64, 32, 8), 1, "mse_scaled",
              score_only=True),
)


def export(candidate: Candidate, folder: Path, profile: bool = False) -> ort.InferenceSession:
    """The candidate's graph written as `aeserve train` writes it, in a one-thread session
    (profiled, its trace in `folder`, when `profile`)."""
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(input_dim=FEATURES, hidden_sizes=list(candidate.hidden),
                                          activation=defaults.ACTIVATION,
                                          members=candidate.members))
    scaler = AffineScaler("standard", np.zeros(FEATURES), np.ones(FEATURES))
    scales = np.ones(FEATURES) if candidate.score == "residual_cauchy" else None
    graph = ScoringGraph(model, scaler, candidate.score, residual_scale=scales)  # type: ignore[arg-type]
    path = folder / f"{abs(hash(candidate))}.onnx"
    write_onnx(graph, FEATURES, path)
    if candidate.score_only:
        import onnx.utils

        onnx.utils.extract_model(str(path), str(path), ["x"], ["score"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / path.stem)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def rows_per_second(session: ort.InferenceSession, rows: np.ndarray, budget_s: float) -> float:
    """Rows per second over as many runs as fit in `budget_s` (at least 5)."""
    runs, started = 0, time.perf_counter()
    while runs < 5 or time.perf_counter() - started < budget_s:
        session.run(["score"], {"x": rows})
        runs += 1
    return runs * len(rows) / (time.perf_counter() - started)


def measure(repeats: int) -> list[tuple[str, int, float, float]]:
    """(label, batch, median rows/s, median ratio to the reference) per candidate and batch."""
    rng = np.random.default_rng(0)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = export(REFERENCE, Path(tmp))
        sessions = [(c, export(c, Path(tmp))) for c in CANDIDATES]
        for batch in (4096, 1):
            rows = rng.normal(size=(batch, FEATURES)).astype(np.float32)
            for session in [reference] + [s for _, s in sessions]:
                rows_per_second(session, rows, 0.2)  # warm up
            ref_runs, runs = [], {c.label: [] for c, _ in sessions}
            for _ in range(repeats):  # alternate, so drifts of the machine hit all alike
                ref_runs.append(rows_per_second(reference, rows, 0.3))
                for candidate, session in sessions:
                    runs[candidate.label].append(rows_per_second(session, rows, 0.3))
            ref = float(np.median(ref_runs))
            out.append((REFERENCE.label, batch, ref, 1.0))
            for label, values in runs.items():
                out.append((label, batch, float(np.median(values)),
                            float(np.median(np.array(values) / np.array(ref_runs)))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "model_cost.md")
    args = parser.parse_args()
    rows = measure(args.repeats)
    lines = ["# What a default model costs", "",
             f"{FEATURES} features, one onnxruntime {ort.__version__} thread, in process; medians "
             f"of {args.repeats} alternating runs; ratio = the candidate's rows/s over the "
             f"reference's in the same round. {platform.machine()}, Python "
             f"{platform.python_version()}. Reproduce: `python -m bench.model_cost`.", "",
             "| model | batch | rows/s | ratio to reference |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {batch} | {rate:,.0f} | {ratio:.2f} |"
              for label, batch, rate, ratio in rows]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
