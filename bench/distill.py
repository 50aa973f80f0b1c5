"""Can the default ensemble be made cheap by distilling it into one network? Measured: no.

Each split of the quality protocol trains the default model (five cross-fitted members) once, then
three single 64-32-8 networks on the same scaled rows, each with the default schedule (20 epochs,
at least 250 steps, Adam 3e-3, batches of 128), scored with the default `residual_cauchy` score
(scales: each network's own median squared residual on its training rows):

  teacher               the default model as served: the members' mean of log(1 + e_kj / s_j)
  error_of_mean         the same members, the Cauchy score of their mean reconstruction
  student_out_of_fold   one network taught each row's out-of-fold reconstruction (the member
                        that never saw the row), so it is never taught to reproduce an anomaly
  student_mean          one network taught the members' mean reconstruction
  single                one network trained on the rows themselves

A single network costs 0.75x (4,096 rows) and 0.92x (1 row) of the reference network to serve,
against 0.11x and 0.38x for the ensemble (bench/results/model_cost.md). docs/variants.md quotes
the output.

    python -m bench.distill [--seeds 0] [--datasets 6_cardio ...] [--out bench/results/distill.md]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from aeserve.training import defaults  # noqa: E402
from aeserve.training.model import Autoencoder, AutoencoderConfig  # noqa: E402
from aeserve.training.preprocessing import fit_scaler  # noqa: E402
from aeserve.training.residual_scale import floored  # noqa: E402
from aeserve.training.trainer import TrainConfig, fold_assignment, train_autoencoder  # noqa: E402
from bench.protocol import CONFIRMATION, Split, dataset_paths, splits  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RULES = ("teacher", "error_of_mean", "student_out_of_fold", "student_mean", "single")


def _scale(errors: np.ndarray) -> np.ndarray:
    """Per-feature median squared residual, floored as training/residual_scale.py floors it."""
    return floored(np.median(errors, axis=0))


def _cauchy(errors: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.log1p(errors / scale).mean(axis=-1)


def _reconstruct(model: Autoencoder, rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(rows, dtype=torch.float32))[1].numpy()


def fit_single(Z: np.ndarray, targets: np.ndarray, seed: int) -> Autoencoder:
    """One default-shaped network taught `targets` for the rows `Z`, on the default schedule."""
    config = TrainConfig(seed=seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Autoencoder(AutoencoderConfig(input_dim=Z.shape[1],
                                          hidden_sizes=list(defaults.HIDDEN_SIZES),
                                          activation=defaults.ACTIVATION))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    x, t = torch.as_tensor(Z, dtype=torch.float32), torch.as_tensor(targets, dtype=torch.float32)
    batch = min(config.batch_size, len(x))
    steps_per_epoch = -(-len(x) // batch)
    for _ in range(max(config.epochs, -(-config.min_steps // steps_per_epoch))):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            rows = order[start:start + batch]
            loss = ((model(x[rows])[1] - t[rows]) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def scores(split: Split) -> dict[str, np.ndarray]:
    """Every rule's test scores on one split."""
    scaler = fit_scaler(split.X_fit, "standard")
    Z = scaler.transform(split.X_fit).astype(np.float32)
    Z_test = scaler.transform(split.X_test).astype(np.float32)
    folds = fold_assignment(len(Z), defaults.MEMBERS, split.seed)
    teacher = train_autoencoder(
        Z, None, AutoencoderConfig(input_dim=Z.shape[1], hidden_sizes=list(defaults.HIDDEN_SIZES),
                                   activation=defaults.ACTIVATION, members=defaults.MEMBERS),
        TrainConfig(seed=split.seed, progress=False), folds=folds).model.eval()
    fit_recon, test_recon = _reconstruct(teacher, Z), _reconstruct(teacher, Z_test)  # [K, N, d]
    out_of_fold = fit_recon[folds, np.arange(len(Z))]
    scale = _scale((out_of_fold - Z) ** 2)
    result = {
        "teacher": _cauchy((test_recon - Z_test) ** 2, scale).mean(axis=0),
        "error_of_mean": _cauchy((test_recon.mean(axis=0) - Z_test) ** 2, scale),
    }
    for rule, targets in (("student_out_of_fold", out_of_fold),
                          ("student_mean", fit_recon.mean(axis=0)), ("single", Z)):
        student = fit_single(Z, targets, split.seed)
        own_scale = _scale((_reconstruct(student, Z) - Z) ** 2)
        result[rule] = _cauchy((_reconstruct(student, Z_test) - Z_test) ** 2, own_scale)
    return result


def summarize(frame: pd.DataFrame, seeds: list[int]) -> str:
    frame = frame.assign(group=np.where(frame.dataset.isin(CONFIRMATION), "confirmation",
                                        "selection"))
    lines = ["# Distilling the default ensemble into one network", "",
             f"Mean ROC-AUC over data sets (seeds {seeds}), the quality protocol of "
             "bench/protocol.py; one thread. "
             f"{platform.machine()}, Python {platform.python_version()}, torch "
             f"{torch.__version__}. Reproduce: `python -m bench.distill`.", ""]
    for setting in ("one-class", "unsupervised"):
        part = frame[frame.setting == setting]
        per_set = part.groupby(["rule", "group", "dataset"]).roc_auc.mean().reset_index()
        table = {rule: {"selection": np.nan, "confirmation": np.nan} for rule in RULES}
        for (rule, group), values in per_set.groupby(["rule", "group"]).roc_auc:
            table[rule][group] = values.mean()
        overall = per_set.groupby("rule").roc_auc.mean()
        lines += [f"## {setting}", "", "| rule | selection | confirmation | all |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {rule} | {table[rule]['selection']:.4f} | "
                  f"{table[rule]['confirmation']:.4f} | {overall[rule]:.4f} |" for rule in RULES]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "distill.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = []
    for path in dataset_paths(only=args.datasets):
        for split in splits(path, tuple(args.seeds)):
            for rule, values in scores(split).items():
                rows.append({"dataset": split.dataset, "seed": split.seed,
                             "setting": split.setting, "rule": rule,
                             "roc_auc": roc_auc_score(split.y_test, values)})
            print(split.dataset, split.setting, flush=True)
    report = summarize(pd.DataFrame(rows), args.seeds)
    args.out.write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
