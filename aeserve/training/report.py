"""Plots and an HTML page that show how a model was trained and how well it separates anomalies.

matplotlib with the Agg backend (no display needed); every figure is a PNG file, and the HTML page
only links them, so the report opens anywhere.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

HISTORY_FILENAME = "history.json"
LOSS_PLOT_FILENAME = "loss_curves.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out: Path) -> Path:
    """Lay out, write and close a figure (closed, so that reports in a loop do not pile up)."""
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_history(folder: Path, train_losses: list[float], val_losses: list[float],
                  best_epoch: int) -> None:
    (folder / HISTORY_FILENAME).write_text(json.dumps(
        {"train_loss": train_losses, "val_loss": val_losses, "best_epoch": best_epoch}))


def plot_losses(history_path: Path, out: Path) -> Path:
    history = json.loads(Path(history_path).read_text())
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], label="training")
    ax.plot(epochs, history["val_loss"], label="validation (held-out normal rows)")
    ax.axvline(history["best_epoch"], color="grey", linestyle=":", label="best epoch (kept)")
    ax.set(xlabel="epoch", ylabel="loss per row", title="Loss curves", yscale="log")
    ax.legend()
    return _save(plt, fig, out)


def plot_scores(normal: np.ndarray, anomalous: np.ndarray, threshold: float, out: Path) -> Path:
    """Both score histograms as the share of their own rows per bin, so twenty anomalies and
    two thousand normal rows are drawn on the same scale (a density per unit score would shrink
    the anomalies' wide, high-score bins of a log axis to nothing)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    every = np.concatenate([normal, anomalous])
    positive = every[every > 0]
    log = positive.size == every.size and positive.max() / positive.min() > 100
    bins = np.geomspace(positive.min(), positive.max(), 50) if log else 50
    for values, name in ((normal, "normal"), (anomalous, "anomalous")):
        ax.hist(values, bins=bins, alpha=0.6, label=f"{name} ({len(values)} rows)",
                weights=np.full(len(values), 1.0 / max(len(values), 1)))
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set(xlabel="score", ylabel="share of the group's rows", title="Score distributions",
           xscale="log" if log else "linear")
    ax.legend()
    return _save(plt, fig, out)


def operating_point(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Where the model's threshold sits: its false positive and true positive rates, precision
    and recall (anomaly = positive, flagged when the score is above the threshold)."""
    flagged = np.asarray(scores, dtype=np.float64) > threshold
    positive = labels == 1
    tp = int(np.sum(flagged & positive))
    fp = int(np.sum(flagged & ~positive))
    return {"fpr": fp / max(int(np.sum(~positive)), 1), "tpr": tp / max(int(positive.sum()), 1),
            "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / max(
                int(positive.sum()), 1)}


def plot_curves(labels: np.ndarray, scores: np.ndarray, out_roc: Path, out_pr: Path,
                threshold: float | None = None) -> None:
    """ROC and precision-recall curves, their areas in the legend, and the model's threshold
    marked on both."""
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    plt = _pyplot()
    point = operating_point(labels, scores, threshold) if threshold is not None else None
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"ROC-AUC {roc_auc_score(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    if point is not None:
        ax.plot(point["fpr"], point["tpr"], "o", color="black",
                label=f"threshold {threshold:.4g}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    _save(plt, fig, out_roc)
    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision, label=f"AP {average_precision_score(labels, scores):.3f}")
    ax.axhline(labels.mean(), color="grey", linestyle=":", label="anomaly share")
    if point is not None:
        ax.plot(point["recall"], point["precision"], "o", color="black",
                label=f"threshold {threshold:.4g}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve")
    ax.legend(loc="lower left")
    _save(plt, fig, out_pr)


def write_html(folder: Path, title: str, metrics: dict, images: list[str]) -> Path:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_shown(v))}</td></tr>"
                   for k, v in _flatten(metrics).items())
    figures = "".join(f'<figure><img src="{html.escape(name)}" alt="{html.escape(name)}">'
                      f"</figure>" for name in images)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
            "collapse}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
            "figure{display:inline-block;margin:1em}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><table>{rows}</table>{figures}</body></html>")
    out = folder / "index.html"
    out.write_text(page)
    return out


def _shown(value: object) -> str:
    """A table cell: floats to four significant digits (0.9367, 212.0 as 212), the rest as is."""
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{value:.4g}"
    return str(value)


def _flatten(metrics: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
