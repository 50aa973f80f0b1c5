"""The evaluation report: the threshold's operating point, plots on comparable scales, and a
table of rounded numbers."""

from __future__ import annotations

import numpy as np
import pytest

from aeserve.training.report import operating_point, plot_curves, plot_scores, write_html


def test_the_operating_point_is_counted_at_the_threshold():
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.95, 0.05])
    # above 0.5: rows 2 (normal), 4 and 5 (anomalous): tp 2, fp 1, 4 normal, 3 anomalous rows
    assert operating_point(labels, scores, 0.5) == pytest.approx(
        {"fpr": 0.25, "tpr": 2 / 3, "precision": 2 / 3, "recall": 2 / 3})
    assert operating_point(labels, scores, 1.0) == {"fpr": 0.0, "tpr": 0.0, "precision": 1.0,
                                                    "recall": 0.0}


def test_histograms_show_each_group_as_shares_of_its_own_rows(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.hist

    def spy(self, values, **kwargs):
        result = original(self, values, **kwargs)
        drawn.append(result[0].sum())
        return result

    monkeypatch.setattr(matplotlib.axes.Axes, "hist", spy)
    rng = np.random.default_rng(0)
    normal, anomalous = rng.gamma(2.0, size=2000), 50 + rng.gamma(2.0, size=20) * 100
    out = plot_scores(normal, anomalous, 10.0, tmp_path / "scores.png")
    assert out.stat().st_size > 1000
    assert drawn == pytest.approx([1.0, 1.0])  # each group's bars add up to all of its rows


def test_curves_and_the_page(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(100, dtype=int), np.ones(10, dtype=int)]
    scores = np.r_[rng.normal(size=100), rng.normal(size=10) + 3]
    plot_curves(labels, scores, tmp_path / "roc.png", tmp_path / "pr.png", threshold=2.0)
    assert (tmp_path / "roc.png").stat().st_size > 1000
    page = write_html(tmp_path, "m", {"roc_auc": 0.936712345, "at_threshold": {
        "precision": 0.98765432, "rows": 212}}, ["roc.png"]).read_text()
    assert "<td>0.9367</td>" in page and "<td>0.9877</td>" in page and "<td>212</td>" in page
