"""Bulk histogram observation equals one observe() per value."""

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from aeserve.serving.metrics import RATIO_BUCKETS, Metrics, observe_many


def exposition(fill) -> bytes:
    registry = CollectorRegistry()
    histogram = Histogram("h", "test", ["model"], buckets=RATIO_BUCKETS, registry=registry)
    fill(histogram.labels("m"))
    return b"\n".join(line for line in generate_latest(registry).splitlines()
                      if not line.startswith(b"h_created"))


def test_observe_many_matches_observe():
    values = np.concatenate([np.random.default_rng(0).exponential(2.0, 500),
                             [0.1, 1.0, 1.25, 100.0, 250.0, 0.0]])

    def one_by_one(child):
        for v in values:
            child.observe(float(v))

    bulk, reference = (exposition(lambda child: observe_many(child, values)).splitlines(),
                       exposition(one_by_one).splitlines())

    def split(lines):
        sums = [float(x.rsplit(b" ", 1)[1]) for x in lines if x.startswith(b"h_sum")]
        return [x for x in lines if not x.startswith(b"h_sum")], sums

    (bulk_lines, bulk_sum), (ref_lines, ref_sum) = split(bulk), split(reference)
    assert bulk_lines == ref_lines  # every bucket count and the total count agree exactly
    assert bulk_sum == pytest.approx(ref_sum, rel=1e-12)  # the sum up to addition order


def test_scores_recorded_against_the_threshold():
    metrics = Metrics()
    metrics.observe_scores("m", 1, np.array([0.5, 2.0, 4.0]), 2.0,
                           np.array([False, False, True]))
    text = metrics.render().decode()
    assert 'aeserve_score_threshold_ratio_bucket{le="1.0",model="m"} 2.0' in text
    assert 'aeserve_anomalies_total{model="m",version="1"} 1.0' in text
    assert 'aeserve_scored_rows_total{model="m",version="1"} 3.0' in text


def test_model_info_marks_removed_versions_zero():
    metrics = Metrics()
    metrics.set_models([("m", 1, ["CPUExecutionProvider"]), ("m", 2, ["CPUExecutionProvider"])])
    metrics.set_models([("m", 2, ["CPUExecutionProvider"])])
    text = metrics.render().decode()
    assert 'aeserve_model_info{model="m",providers="CPUExecutionProvider",version="1"} 0.0' in text
    assert 'aeserve_model_info{model="m",providers="CPUExecutionProvider",version="2"} 1.0' in text
