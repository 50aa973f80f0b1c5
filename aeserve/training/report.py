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
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    every = np.concatenate([normal, anomalous])
    positive = every[every > 0]
    log = positive.size == every.size and positive.max() / positive.min() > 100
    bins = np.geomspace(positive.min(), positive.max(), 50) if log else 50
    ax.hist(normal, bins=bins, alpha=0.6, label=f"normal ({len(normal)})", density=True)
    ax.hist(anomalous, bins=bins, alpha=0.6, label=f"anomalous ({len(anomalous)})",
            density=True)
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set(xlabel="score", ylabel="density", title="Score distributions",
           xscale="log" if log else "linear")
    ax.legend()
    return _save(plt, fig, out)


def plot_curves(labels: np.ndarray, scores: np.ndarray, out_roc: Path, out_pr: Path) -> None:
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    _save(plt, fig, out_roc)
    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision)
    ax.axhline(labels.mean(), color="grey", linestyle=":", label="anomaly share")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve")
    ax.legend()
    _save(plt, fig, out_pr)


def write_html(folder: Path, title: str, metrics: dict, images: list[str]) -> Path:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
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


def _flatten(metrics: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
