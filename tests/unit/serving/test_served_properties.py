"""Properties of the served answers over generated requests (Hypothesis, in process, the shipped
model): finite inputs give finite scores or the typed 422 that names the rows, never a 5xx or a
`null`; and the score metrics count every row given a finite score exactly once, whatever else
arrives (a request refused because one of its rows overflowed still had its other rows scored:
they are counted, the overflowed ones never)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from aeserve.serving.app import create_app
from aeserve.serving.settings import Settings
from tests.helpers import ROOT

WIDTH = 30
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
wide_rows = st.lists(st.lists(finite, min_size=WIDTH, max_size=WIDTH), min_size=1, max_size=6)


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(models_dir=ROOT / "models", poll_interval_s=0, log_level="WARNING"))
    with TestClient(app) as test_client:
        yield test_client


@SETTINGS
@given(wide_rows)
def test_finite_inputs_give_finite_scores_or_a_422_naming_the_rows(client, rows):
    response = client.post("/anomaly-score", json={"instances": rows})
    if response.status_code == 422:
        error = response.json()["error"]
        assert error["code"] == "non_finite_result" and error["rows"]
        assert set(error["rows"]) <= set(range(len(rows)))
        return
    assert response.status_code == 200, response.text
    scores = response.json()["scores"]
    assert len(scores) == len(rows) and all(isinstance(s, float) and math.isfinite(s)
                                            for s in scores)


def scored_rows(client: TestClient) -> float:
    """aeserve_scored_rows_total for the shipped model, summed over its versions."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "aeserve_scored_rows":
            return sum(s.value for s in family.samples if s.name == "aeserve_scored_rows_total"
                       and s.labels.get("model") == "breast-cancer")
    return 0.0


request_kinds = st.sampled_from(["valid", "wrong width", "overflow", "malformed"])


@SETTINGS
@given(st.lists(st.tuples(request_kinds, st.integers(1, 20)), min_size=1, max_size=5))
def test_metrics_count_every_scored_row_once(client, requests):
    before, scored = scored_rows(client), 0
    rng = np.random.default_rng(len(requests))
    for kind, n_rows in requests:
        rows = rng.normal(size=(n_rows, WIDTH)) * 5 + 15
        if kind == "wrong width":
            rows = rows[:, :-1]
        elif kind == "overflow":
            rows[-1] = 3e38  # finite in, overflowing out: the whole request is refused
        body = (b"{" if kind == "malformed" else None)
        response = (client.post("/anomaly-score", content=body,
                                headers={"content-type": "application/json"})
                    if body is not None else
                    client.post("/anomaly-score", json={"instances": rows.tolist()}))
        if response.status_code == 200:
            scored += n_rows
        elif kind == "overflow":
            assert response.status_code == 422
            scored += n_rows - len(response.json()["error"]["rows"])
        else:
            assert 400 <= response.status_code < 500
    assert scored_rows(client) - before == scored
