"""`aeserve evaluate`: score a labelled file with an exported model and say how well it does.

The model is loaded by the model store (the same validation as the server's) and run through the
same onnxruntime session; columns are matched to the model's features by name, so the file may
hold them in any order, with extra columns.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from aeserve.artifact import store
from aeserve.artifact.card import CARD_FILENAME, ModelCard
from aeserve.artifact.errors import ModelLoadError
from aeserve.artifact.scores import verdicts
from aeserve.artifact.session import SessionConfig
from aeserve.artifact.store import LoadedVersion
from aeserve.training.data import (
    ColumnChoice,
    DataError,
    Dataset,
    add_reading_arguments,
    load_dataset,
    reading_options,
)
from aeserve.training.report import (
    HISTORY_FILENAME,
    plot_curves,
    plot_losses,
    plot_scores,
    write_html,
)


def resolve_model(path: Path) -> Path:
    """models/NAME/VERSION as given, or models/NAME's highest version."""
    path = Path(path)
    if (path / CARD_FILENAME).is_file():
        return path
    versions = store.version_folders(path) if path.is_dir() else {}
    if not versions:
        raise DataError(f"no model version under {path}")
    return versions[max(versions)]


def load_model(path: Path) -> LoadedVersion:
    """The version at `path`, validated by the model store as the server validates it."""
    folder = resolve_model(path)
    if not folder.name.isdigit():
        raise DataError(f"{folder} is not a version folder (models/NAME/VERSION)")
    return store.load_version(folder.resolve().parent.name, int(folder.name), folder,
                              SessionConfig(provider="cpu"))


def aligned_features(data: Dataset, card: ModelCard) -> np.ndarray:
    missing = [n for n in card.feature_names if n not in data.feature_names]
    if missing and data.feature_names == [f"x{i}" for i in range(data.X.shape[1])] \
            and data.X.shape[1] == card.input_dim:
        return data.X  # an NPZ without names: columns taken in order
    if missing:
        raise DataError(f"the data lacks the model's features {missing}")
    order = [data.feature_names.index(n) for n in card.feature_names]
    return data.X[:, order]


def read_data(args: argparse.Namespace, card: ModelCard) -> Dataset:
    """The labelled rows a model scores: the file's rows, or for a windowed model the windows
    that end at each reading with a full window (labelled as that reading), cut as training
    cut them."""
    if card.window is None:
        return load_dataset(args.data, args.label_column, **reading_options(args))
    from aeserve.training.windowing import WindowOptions, load_keys, windowed

    window = card.window
    data = load_dataset(args.data, args.label_column, **reading_options(args),
                        choice=ColumnChoice(label=args.label_column,
                                            columns=tuple(window.features)))
    options = WindowOptions(size=window.size, series_column=window.series_column,
                            time_column=window.time_column)
    return windowed(data, options, load_keys(args.data, options, reading_options(args)))


def metrics_at(labels: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    true_positives = int((flagged & (labels == 1)).sum())
    precision = true_positives / max(1, int(flagged.sum()))
    recall = true_positives / max(1, int((labels == 1).sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "flagged": int(flagged.sum())}


def evaluate(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    if len(np.unique(labels)) < 2:
        raise DataError("evaluation needs both normal (0) and anomalous (1) rows")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(precision), where=(precision + recall) > 0)[:-1]
    best = int(np.argmax(f1))
    # precision_recall_curve flags scores >= t; `verdicts` flags scores > threshold. Scores are
    # float32, so one float32 step below t flags the same rows in float32 and float64 alike.
    best_threshold = float(np.nextafter(np.float32(thresholds[best]), np.float32(-np.inf)))
    return {
        "rows": len(labels),
        "anomalies": int(labels.sum()),
        "roc_auc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "at_model_threshold": {"threshold": threshold,
                               **metrics_at(labels, verdicts(scores, threshold))},
        "at_best_f1_threshold": {"threshold": best_threshold,
                                 **metrics_at(labels, verdicts(scores, best_threshold))},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path,
                        help="models/NAME (highest version) or models/NAME/VERSION")
    parser.add_argument("--data", required=True, type=Path, help="CSV, Parquet or NPZ")
    parser.add_argument("--label-column", default="y",
                        help="0/1 column, 1 = anomaly (default: %(default)s)")
    add_reading_arguments(parser)
    parser.add_argument("--report", type=Path, default=None,
                        help="folder for PNG plots and an HTML page (default: none, no report)")


def run(args: argparse.Namespace) -> int:
    try:
        model = load_model(args.model)
        folder, card = model.path, model.card
        data = read_data(args, card)
        if data.y is None:
            raise DataError(f"no label column {args.label_column!r} in {args.data}")
        X = aligned_features(data, card).astype(np.float32)
        scores = model.session.run(X, ("score",))["score"].astype(np.float64)
        result = {"model": card.name, "version": card.version, **evaluate(scores, data.y,
                                                                           card.threshold)}
    except (DataError, ModelLoadError, ValueError, OSError) as exc:
        print(f"aeserve evaluate: error: {exc}", file=sys.stderr)
        return 2
    if args.report is not None:
        write_report(args.report, folder, card, scores, data.y, result)
        result["report"] = str(args.report / "index.html")
    print(json.dumps(result, indent=2))
    return 0


def write_report(out: Path, folder: Path, card: ModelCard, scores: np.ndarray,
                 labels: np.ndarray, metrics: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    images = []
    if (folder / HISTORY_FILENAME).is_file():
        images.append(plot_losses(folder / HISTORY_FILENAME, out / "loss_curves.png").name)
    images.append(plot_scores(scores[labels == 0], scores[labels == 1], card.threshold,
                              out / "scores.png").name)
    plot_curves(labels, scores, out / "roc.png", out / "pr.png", threshold=card.threshold)
    images += ["roc.png", "pr.png"]
    write_html(out, f"{card.name} version {card.version}", metrics, images)
