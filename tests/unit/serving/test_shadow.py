"""How two versions' verdicts on the same rows are counted."""

from __future__ import annotations

import numpy as np

from aeserve.serving.shadow import compare_verdicts, shadow_report


def test_verdicts_are_counted_by_outcome():
    active = np.array([0, 0, 1, 1, 1, 0], dtype=bool)
    shadow = np.array([0, 1, 1, 0, 0, 0], dtype=bool)
    counts = compare_verdicts(active, shadow)
    assert counts == {"both_normal": 2, "both_anomaly": 1, "new_alarm": 1, "lost_alarm": 2}
    report = shadow_report("m", 1, 2, 0.5, "ready", counts, skipped=4)
    assert report["rows_compared"] == 6 and report["rows_skipped"] == 4
    assert report["agreement"] == 3 / 6
    assert report["anomaly_rate"] == {"active": 3 / 6, "shadow": 2 / 6}
    assert shadow_report("m", 1, 2, 0.5, "ready", {}, 0)["agreement"] is None
