"""Drift over real HTTP: normal traffic, then traffic with one feature shifted by one training
standard deviation; the drift report and /metrics both say which feature moved."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

from aeserve.artifact.drift import ALERT_LEVEL, psi
from tests.helpers import add_version, server_process, wait_for

WINDOW = 1000


@pytest.fixture
def server(tmp_path, trained):
    add_version(tmp_path, trained.path, "sensors", 1)
    with server_process(tmp_path, AESERVE_DRIFT_WINDOW_ROWS=str(WINDOW)) as running:
        yield running


def send(client: httpx.Client, rows: np.ndarray) -> None:
    for start in range(0, len(rows), 50):  # 50-row requests: each row enters the window
        response = client.post("/anomaly-score",
                               json={"instances": rows[start:start + 50].tolist()})
        assert response.status_code == 200


def window_from_metrics(text: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows per bin, reference shares) of one feature, read from /metrics."""
    def samples(metric: str) -> np.ndarray:
        found = {}
        for line in text.splitlines():
            if line.startswith(metric + "{") and f'column="{column}"' in line:
                found[int(re.search(r'bin="(\d+)"', line).group(1))] = float(line.split()[-1])
        return np.array([found[b] for b in sorted(found)])
    return samples("aeserve_drift_window_rows"), samples("aeserve_drift_reference_share")


def test_a_shifted_feature_is_put_first_and_above_its_alert_level(server, trained, normal_rows):
    names = trained.card.feature_names
    with httpx.Client(base_url=server.url, timeout=30) as client:
        send(client, np.tile(normal_rows, (3, 1)))  # 1,200 rows: the window holds the last 1,000
        calm = client.get("/models/sensors/drift").json()
        assert calm["window"]["rows"] == WINDOW and calm["window"]["scored_rows"] == WINDOW
        assert all(f["psi"] < ALERT_LEVEL and not f["drifted"] for f in calm["features"])
        assert calm["score"]["psi"] < ALERT_LEVEL

        shifted = np.tile(normal_rows, (3, 1))
        shifted[:, 3] += normal_rows[:, 3].std()
        send(client, shifted)
        report = client.get("/models/sensors/versions/1/drift").json()
        first, *others = report["features"]
        assert first["name"] == names[3] and first["psi"] > ALERT_LEVEL and first["drifted"]
        assert all(f["psi"] < ALERT_LEVEL for f in others)
        assert [f["psi"] for f in report["features"]] == sorted(
            (f["psi"] for f in report["features"]), reverse=True)
        assert report["model"] == "sensors" and report["version"] == 1
        assert 0.0 <= report["anomaly_rate"]["window"] <= 1.0

        # /metrics carries the same window (published at most once a second): the PSI from
        # its gauges is the report's.
        def published():
            counts, reference = window_from_metrics(client.get("/metrics").text, names[3])
            return (counts, reference) if counts.sum() == WINDOW else None
        counts, reference = wait_for(published, timeout=10)
        assert psi(counts[None], reference[None])[0] == pytest.approx(first["psi"])

        missing = client.get("/models/nope/drift")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_model"


def test_a_version_without_a_reference_says_why(tmp_path):
    import json

    from tests.helpers import SHIPPED_MODEL

    folder = add_version(tmp_path, SHIPPED_MODEL, "old", 1)
    card = json.loads((folder / "model.json").read_text())  # as a card of schema version 1
    card.pop("reference", None)
    (folder / "model.json").write_text(json.dumps({**card, "schema_version": 1}))
    with server_process(tmp_path) as running:
        answer = httpx.get(f"{running.url}/models/old/drift")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "drift_unavailable"
    assert "schema version 1" in answer.json()["error"]["message"]
