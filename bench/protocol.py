"""The evaluation protocol of ../shared/data/README.md, shared by the quality benchmarks.

Stratified 70/30 split per seed; one-class setting fits on the training part's normal rows,
unsupervised on the whole training part; both score the whole test part; data sets over 20,000
rows are subsampled to 20,000 (stratified, with the seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "adbench"
SEEDS = (0, 1, 2)
MAX_ROWS = 20_000
EXCLUDED = ("16_http",)  # throughput data, not a quality benchmark
#: Joined on 2026-11-30, larger and of other kinds: no default was chosen on them. A default is
#: chosen on the other sixteen (the selection sets) and must hold on these.
CONFIRMATION = ("11_donors", "1_ALOI", "33_skin", "5_campaign", "8_celeba")
#: Joined on 2026-12-07: image and text embeddings (ResNet18, BERT), wide and often small and
#: heavily contaminated. Their file names carry no ADBench number, only these prefixes.
EMBEDDING_PREFIXES = ("CV_", "NLP_")
#: The three development groups, in report order: a default must hold on each of them.
GROUPS = ("selection", "confirmation", "embeddings")


def group_of(dataset: str) -> str:
    """The development group of a data set, by its file's stem."""
    if dataset in CONFIRMATION:
        return "confirmation"
    if dataset.startswith(EMBEDDING_PREFIXES):
        return "embeddings"
    return "selection"


def _order(path: Path) -> tuple[int, int, str]:
    """ADBench's numbered Classical sets by number, then the embeddings by name."""
    head = path.stem.split("_")[0]
    return (0, int(head), path.stem) if head.isdigit() else (1, 0, path.stem)


@dataclass(frozen=True)
class Split:
    dataset: str
    seed: int
    setting: str  # "one-class" or "unsupervised"
    X_fit: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def dataset_paths(data_dir: Path = DATA_DIR, only: list[str] | None = None) -> list[Path]:
    paths = sorted(data_dir.glob("*.npz"), key=_order)
    paths = [p for p in paths if p.stem not in EXCLUDED]
    if only:
        paths = [p for p in paths if p.stem in only]
    return paths


def splits(path: Path, seeds: tuple[int, ...] = SEEDS,
           settings: tuple[str, ...] = ("one-class", "unsupervised")) -> Iterator[Split]:
    with np.load(path) as archive:
        X, y = archive["X"].astype(np.float64), archive["y"].astype(np.int64)
    for seed in seeds:
        Xs, ys = X, y
        if len(Xs) > MAX_ROWS:
            Xs, _, ys, _ = train_test_split(Xs, ys, train_size=MAX_ROWS, stratify=ys,
                                            random_state=seed)
        X_train, X_test, y_train, y_test = train_test_split(
            Xs, ys, test_size=0.3, stratify=ys, random_state=seed)
        for setting in settings:
            X_fit = X_train[y_train == 0] if setting == "one-class" else X_train
            yield Split(path.stem, seed, setting, X_fit, X_test, y_test)


def group_table(frame: pd.DataFrame, by: str, metric: str = "roc_auc") -> pd.DataFrame:
    """Mean `metric` over each group's data sets (each data set first averaged over seeds), one
    row per value of `by` (a detector, a rule), one column per (setting, group)."""
    frame = frame.assign(group=frame.dataset.map(group_of))
    per_dataset = frame.groupby(["setting", "group", by, "dataset"])[metric].mean()
    table = per_dataset.groupby(["setting", "group", by]).mean().unstack(["setting", "group"])
    present = [(s, g) for s in sorted(frame.setting.unique()) for g in GROUPS
               if (s, g) in table.columns]
    return table[present]


def leave_one_group_out(table: pd.DataFrame) -> pd.DataFrame:
    """Whether a choice made on two groups holds on the third: per setting and held-out group,
    the candidate (a row of `group_table`) with the best mean over the other groups, its mean on
    the held-out group, and the held-out group's own best candidate beside it."""
    lines = []
    for setting in table.columns.get_level_values(0).unique():
        groups = list(table[setting].columns)
        for held in groups:
            others = [g for g in groups if g != held]
            if not others:
                continue
            chosen = table[setting][others].mean(axis=1).idxmax()
            best = table[setting][held].idxmax()
            lines.append({"setting": setting, "held out": held, "chosen on the others": chosen,
                          "its mean there": round(float(table[setting][held][chosen]), 4),
                          "best there": best,
                          "best mean": round(float(table[setting][held][best]), 4)})
    return pd.DataFrame(lines)
