"""Detection quality: aeserve against PyOD and scikit-learn, side by side, on real data.

Protocol (bench/protocol.py, as in ../shared/data/README.md): every ADBench data set in
../shared/data/adbench/ but 16_http; seeds 0, 1, 2; stratified 70/30 split; one-class (fit on the
training part's normal rows) and unsupervised (fit on the whole training part) settings; ROC-AUC
and average precision on the test part. Detectors:

  aeserve            `aeserve train` with no tuning flags (the defaults), scored through the
                     exported ONNX graph exactly as the service scores it
  aeserve-<variant>  each variant of the family with its defaults, same path
  pyod_ae, pyod_vae  PyOD's AutoEncoder and VAE with their defaults
  iforest            scikit-learn's IsolationForest
  pca_recon          PCA reconstruction error (components for 90% of the variance)
  knn, lof, ecod,    PyOD's KNN (k=5, largest distance), LOF, ECOD, OCSVM and DeepSVDD with their
  ocsvm, deepsvdd    defaults

The data sets fall in three groups (../shared/data/README.md): the sixteen selection sets, the
five confirmation sets and the fourteen embeddings; a default must hold on each. The report gives
each group on its own and all together.

Peers get a StandardScaler fit on their fitting rows (as in BASELINES.md); aeserve does its own
preprocessing. Everything runs on one thread, so fit times compare with BASELINES.md. Rows go to a
CSV as they are measured (a run can be resumed with --resume); the summary goes to
bench/results/quality.md.

    python -m bench.quality [--detectors aeserve iforest ...] [--datasets 6_cardio ...]
                            [--seeds 0 1 2] [--resume]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

from bench.protocol import (  # noqa: E402
    CONFIRMATION,
    GROUPS,
    SEEDS,
    Split,
    dataset_paths,
    group_of,
    group_table,
    leave_one_group_out,
    splits,
)

RESULTS = Path(__file__).parent / "results"
FIELDS = ["detector", "dataset", "seed", "setting", "roc_auc", "average_precision", "fit_s"]
VARIANTS = ("ae", "sparse-l1", "sparse-kl", "denoising", "contractive", "vae")
PEERS = ("pyod_ae", "pyod_vae", "iforest", "pca_recon", "knn", "lof", "ecod", "ocsvm", "deepsvdd")

Scorer = Callable[[Split], tuple[np.ndarray, float]]  # test scores, fit seconds


def _aeserve(variant: str | None) -> Scorer:
    def run(split: Split) -> tuple[np.ndarray, float]:
        import onnxruntime as ort

        from aeserve.training.data import Dataset
        from aeserve.training.pipeline import TrainOptions, train_and_export
        from aeserve.training.trainer import TrainConfig

        data = Dataset(X=split.X_fit, y=None, source=split.dataset,
                       feature_names=[f"x{i}" for i in range(split.X_fit.shape[1])])
        options = TrainOptions(name="bench", command="bench/quality.py",
                               train=TrainConfig(seed=split.seed, progress=False))
        if variant is not None:
            options.variant = variant
        with tempfile.TemporaryDirectory() as models_dir, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            options.models_dir = Path(models_dir)
            outcome = train_and_export(data, options)
            fit_s = outcome.card.training.fit_s  # the training loop, as PyOD's fit()
            session_options = ort.SessionOptions()
            session_options.intra_op_num_threads = 1
            session = ort.InferenceSession(str(outcome.path / "model.onnx"), session_options,
                                           providers=["CPUExecutionProvider"])
            scores = session.run(["score"], {"x": split.X_test.astype(np.float32)})[0]
        return scores.astype(np.float64), fit_s

    return run


def _scaled(split: Split) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(split.X_fit)
    return scaler.transform(split.X_fit), scaler.transform(split.X_test)


def _pyod(kind: str) -> Scorer:
    def run(split: Split) -> tuple[np.ndarray, float]:
        import torch

        torch.manual_seed(split.seed)
        torch.set_num_threads(1)
        if kind == "ae":
            from pyod.models.auto_encoder import AutoEncoder as Model
        else:
            from pyod.models.vae import VAE as Model
        X_fit, X_test = _scaled(split)
        model = Model(random_state=split.seed, verbose=0)
        started = time.perf_counter()
        model.fit(X_fit)
        fit_s = time.perf_counter() - started
        return model.decision_function(X_test), fit_s

    return run


def _iforest(split: Split) -> tuple[np.ndarray, float]:
    from sklearn.ensemble import IsolationForest

    X_fit, X_test = _scaled(split)
    started = time.perf_counter()
    model = IsolationForest(random_state=split.seed).fit(X_fit)
    return -model.score_samples(X_test), time.perf_counter() - started


def _pca(split: Split) -> tuple[np.ndarray, float]:
    from sklearn.decomposition import PCA

    X_fit, X_test = _scaled(split)
    started = time.perf_counter()
    pca = PCA(n_components=0.9, random_state=split.seed).fit(X_fit)
    fit_s = time.perf_counter() - started
    recon = pca.inverse_transform(pca.transform(X_test))
    return ((X_test - recon) ** 2).sum(axis=1), fit_s


def _pyod_classic(kind: str) -> Scorer:
    """PyOD's KNN, LOF, ECOD, OCSVM and DeepSVDD with their defaults, on standardized rows."""

    def run(split: Split) -> tuple[np.ndarray, float]:
        X_fit, X_test = _scaled(split)
        if kind == "knn":
            from pyod.models.knn import KNN
            model = KNN()
        elif kind == "lof":
            from pyod.models.lof import LOF
            model = LOF()
        elif kind == "ecod":
            from pyod.models.ecod import ECOD
            model = ECOD()
        elif kind == "ocsvm":
            from pyod.models.ocsvm import OCSVM
            model = OCSVM()
        else:
            import torch
            from pyod.models.deep_svdd import DeepSVDD

            torch.manual_seed(split.seed)
            model = DeepSVDD(n_features=X_fit.shape[1], random_state=split.seed, verbose=0)
        started = time.perf_counter()
        model.fit(X_fit)
        fit_s = time.perf_counter() - started
        return model.decision_function(X_test), fit_s

    return run


DETECTORS: dict[str, Scorer] = {
    "aeserve": _aeserve(None),
    **{f"aeserve-{v}": _aeserve(v) for v in VARIANTS},
    "pyod_ae": _pyod("ae"),
    "pyod_vae": _pyod("vae"),
    "iforest": _iforest,
    "pca_recon": _pca,
    **{kind: _pyod_classic(kind) for kind in ("knn", "lof", "ecod", "ocsvm", "deepsvdd")},
}


def measure(detectors: list[str], datasets: list[str] | None, seeds: tuple[int, ...],
            csv_path: Path, resume: bool) -> list[dict]:
    done: set[tuple] = set()
    rows: list[dict] = []
    if resume and csv_path.exists():
        with open(csv_path) as handle:
            rows = list(csv.DictReader(handle))
        done = {(r["detector"], r["dataset"], int(r["seed"]), r["setting"]) for r in rows}
    else:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as handle:
            csv.DictWriter(handle, FIELDS).writeheader()
    for path in dataset_paths(only=datasets):
        for split in splits(path, seeds):
            for name in detectors:
                key = (name, split.dataset, split.seed, split.setting)
                if key in done:
                    continue
                scores, fit_s = DETECTORS[name](split)
                scores = np.nan_to_num(scores, nan=np.inf, posinf=np.inf)
                scores = np.where(np.isinf(scores), np.finfo(np.float64).max, scores)
                row = {"detector": name, "dataset": split.dataset, "seed": split.seed,
                       "setting": split.setting,
                       "roc_auc": roc_auc_score(split.y_test, scores),
                       "average_precision": average_precision_score(split.y_test, scores),
                       "fit_s": fit_s}
                rows.append(row)
                with open(csv_path, "a", newline="") as handle:
                    csv.DictWriter(handle, FIELDS).writerow(row)
                print(f"{split.dataset:16s} seed {split.seed} {split.setting:12s} {name:22s} "
                      f"ROC-AUC {row['roc_auc']:.3f} AP {row['average_precision']:.3f} "
                      f"fit {fit_s:6.2f} s", flush=True)
    return rows


def summarize(rows: list[dict], detectors: list[str]) -> str:
    lines = ["# Detection quality", "",
             "Protocol of bench/protocol.py (../shared/data/README.md): seeds "
             f"{sorted({int(r['seed']) for r in rows})}, stratified 70/30, 20,000-row cap; "
             "ROC-AUC and average precision on the test part, averaged over seeds; one thread; "
             f"{platform.machine()}, Python {platform.python_version()}. Reproduce: "
             "`make bench-quality` (`python -m bench.quality`); raw rows in "
             "bench/results/quality.csv. Three development groups (bench/protocol.py): the "
             "selection sets, the confirmation sets (" + ", ".join(CONFIRMATION) + ") and the "
             "embeddings (image and text features); a default must hold on each.", ""]
    groups = {f"{group} sets": [r for r in rows if group_of(r["dataset"]) == group]
              for group in GROUPS}
    measured = [name for name, group_rows in groups.items() if group_rows]
    groups["all sets"] = rows if len(measured) > 1 else []  # "all" only beside two groups
    targets = []
    for group, group_rows in groups.items():
        if not group_rows:
            continue
        summary: dict[str, dict] = {}
        for setting in ("one-class", "unsupervised"):
            table, summary[setting] = _table(group_rows, detectors, setting)
            if table:
                lines += [f"## {setting}, {group}", "", *table, ""]
        targets += _targets(group, summary)
    return "\n".join(lines + targets + _leave_one_group_out(rows) + _small_data(rows))


def _leave_one_group_out(rows: list[dict]) -> list[str]:
    """Whether the detector that is best on two groups is best on the third too: the
    benchmark's check that a choice made on some data holds on other data."""
    frame = pd.DataFrame(rows).astype({"roc_auc": float, "seed": int})
    summary = leave_one_group_out(group_table(frame, "detector"))
    if summary.empty:
        return []
    lines = ["## Leave one group out", "",
             "Per setting, the detector with the best mean ROC-AUC over two groups, and how it "
             "does on the third beside that group's best.", "",
             "| setting | held out | best on the other two | its mean there | best there | "
             "best mean |", "|---|---|---|---:|---|---:|"]
    lines += [f"| {r['setting']} | {r['held out']} | {r['chosen on the others']} | "
              f"{r['its mean there']:.4f} | {r['best there']} | {r['best mean']:.4f} |"
              for r in summary.to_dict("records")]
    return [*lines, ""]


#: Data sets with fewer rows than this are "small": there the defaults must not fail
#: (ROC-AUC below 0.5) where IsolationForest succeeds (above 0.7).
SMALL_ROWS = 500


def _small_data(rows: list[dict]) -> list[str]:
    """The small-data rule, per small data set and setting: the defaults at 0.5 or above
    wherever IsolationForest scores above 0.7 (mean ROC-AUC over seeds). Empty when the data
    sets cannot be read to count their rows, or either detector was not measured."""
    measured = sorted({r["dataset"] for r in rows})
    sizes = {}
    for path in dataset_paths(only=measured):
        with np.load(path) as archive:
            sizes[path.stem] = len(archive["y"])
    lines = []
    for dataset in (d for d in measured if sizes.get(d, SMALL_ROWS) < SMALL_ROWS):
        for setting in ("one-class", "unsupervised"):
            mean = {name: np.mean([float(r["roc_auc"]) for r in rows if r["detector"] == name
                                   and r["dataset"] == dataset and r["setting"] == setting]
                                  or [np.nan]) for name in ("aeserve", "iforest")}
            if np.isnan(list(mean.values())).any():
                continue
            failed = mean["aeserve"] < 0.5 and mean["iforest"] > 0.7
            lines.append(f"| {dataset} | {sizes[dataset]} | {setting} | {mean['aeserve']:.3f} "
                         f"| {mean['iforest']:.3f} | {'no' if failed else 'yes'} |")
    if not lines:
        return []
    return ["", f"## Small data sets (under {SMALL_ROWS} rows)", "",
            "The defaults must not score below 0.5 where IsolationForest scores above 0.7.", "",
            "| data set | rows | setting | aeserve | iforest | met |",
            "|---|---:|---|---:|---:|---|", *lines]


def _table(rows: list[dict], detectors: list[str], setting: str) -> tuple[list[str], dict]:
    """The markdown table of one setting (per data set, means, ranks, fit times) and its means."""
    picked = [r for r in rows if r["setting"] == setting]
    if not picked:
        return [], {}
    names = [d for d in detectors if any(r["detector"] == d for r in picked)]
    datasets = list(dict.fromkeys(r["dataset"] for r in picked))

    def mean(detector: str, dataset: str, field: str) -> float:
        values = [float(r[field]) for r in picked
                  if r["detector"] == detector and r["dataset"] == dataset]
        return float(np.mean(values)) if values else float("nan")

    auc = np.array([[mean(d, ds, "roc_auc") for d in names] for ds in datasets])
    ap = np.array([[mean(d, ds, "average_precision") for d in names] for ds in datasets])
    ranks = np.array([_ranks(row) for row in auc])
    fit = [float(np.median([float(r["fit_s"]) for r in picked if r["detector"] == d]))
           for d in names]
    lines = ["| dataset | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i, dataset in enumerate(datasets):
        best = np.nanmax(auc[i])
        cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in auc[i]]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    mean_auc, mean_rank = np.nanmean(auc, 0), ranks.mean(0)
    lines += [
        "| **mean ROC-AUC** | " + " | ".join(f"**{v:.4f}**" for v in mean_auc) + " |",
        "| mean AP | " + " | ".join(f"{v:.3f}" for v in np.nanmean(ap, 0)) + " |",
        "| mean rank (ROC-AUC) | " + " | ".join(f"{v:.2f}" for v in mean_rank) + " |",
        "| median fit s | " + " | ".join(f"{v:.2f}" for v in fit) + " |"]
    return lines, {"auc": dict(zip(names, mean_auc, strict=True)),
                   "rank": dict(zip(names, mean_rank, strict=True)),
                   "fit": dict(zip(names, fit, strict=True))}


#: Mean one-class ROC-AUC of the plain MLP autoencoder on the selection sets in
#: ../shared/data/BASELINES.md (not run here: a reference figure the one-class target includes).
MLP_AE_ONE_CLASS = 0.8270


def _targets(group: str, summary: dict[str, dict]) -> list[str]:
    """The defaults' targets in one group of data sets: in each setting, mean ROC-AUC at least
    the best peer's + 0.01 and the best mean rank; median fit no longer than PyOD's
    AutoEncoder's."""
    checks = []
    for setting, values in summary.items():
        if not values or "aeserve" not in values["auc"]:
            continue
        peers = {d: v for d, v in values["auc"].items() if d in PEERS}
        if setting == "one-class" and group == "selection sets":
            peers["mlp_ae (BASELINES.md)"] = MLP_AE_ONE_CLASS
        if peers:
            best_name, best = max(peers.items(), key=lambda item: item[1])
            ours = values["auc"]["aeserve"]
            checks.append((f"{setting} mean ROC-AUC", f"{ours:.4f}",
                           f">= {best + 0.01:.4f} ({best_name} {best:.4f} + 0.01)",
                           ours >= best + 0.01))
        ranked = {d: r for d, r in values["rank"].items() if d in PEERS or d == "aeserve"}
        if len(ranked) > 1:
            best_peer = min((r, d) for d, r in ranked.items() if d != "aeserve")
            checks.append((f"{setting} mean rank", f"{ranked['aeserve']:.2f}",
                           f"< {best_peer[0]:.2f} ({best_peer[1]})",
                           ranked["aeserve"] < best_peer[0]))
        if "pyod_ae" in values["fit"]:
            ours, theirs = values["fit"]["aeserve"], values["fit"]["pyod_ae"]
            checks.append((f"{setting} median fit s", f"{ours:.2f}", f"<= {theirs:.2f} (pyod_ae)",
                           ours <= theirs))
    if not checks:
        return []
    return [f"## Targets of the defaults (`aeserve`), {group}", "",
            "| measure | aeserve | target | met |", "|---|---:|---|---|",
            *(f"| {m} | {v} | {t} | {'yes' if ok else 'no'} |" for m, v, t, ok in checks), ""]


def _ranks(values: np.ndarray) -> np.ndarray:
    """Rank 1 = best (highest ROC-AUC); ties share their mean rank."""
    order = (-values).argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS),
                        choices=list(DETECTORS))
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--resume", action="store_true", help="skip rows already in the CSV")
    parser.add_argument("--csv", type=Path, default=RESULTS / "quality.csv")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.md")
    parser.add_argument("--summarize", nargs="+", type=Path, default=None, metavar="CSV",
                        help="measure nothing: merge these CSVs (e.g. of runs split by data "
                             "set across cores) into --csv and write the report")
    args = parser.parse_args()
    if args.summarize:
        merged: dict[tuple, dict] = {}
        for path in args.summarize:
            with open(path) as handle:
                for row in csv.DictReader(handle):  # a row measured twice counts once
                    key = (row["detector"], row["dataset"], row["seed"], row["setting"])
                    merged.setdefault(key, row)
        rows = list(merged.values())
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        import torch

        torch.set_num_threads(1)
        rows = measure(args.detectors, args.datasets, tuple(args.seeds), args.csv, args.resume)
    report = summarize(rows, args.detectors)
    args.out.write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
