"""The prediction log's writer: rows reach Parquet off the request path, memory and disk stay
bounded, and feedback joins labels to the newest prediction of each id."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from aeserve.artifact import prediction_log as log_format
from aeserve.serving.metrics import Metrics
from aeserve.serving.prediction_log import PredictionLog, PredictionLogSettings


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def make(tmp_path, **overrides) -> tuple[PredictionLog, Metrics]:
    metrics = Metrics()
    settings = PredictionLogSettings(tmp_path, **{"flush_s": 3600.0, **overrides})
    return PredictionLog(settings, metrics), metrics


def record(log: PredictionLog, ids, scores, threshold=1.0, version=1, features=None):
    scores = np.asarray(scores, dtype=np.float32)
    log.record("m", version, ids, "req", scores, threshold, scores > threshold,
               features if features is not None else np.zeros((len(scores), 2), np.float32))


def test_rows_reach_one_file_per_flush_with_what_was_answered(tmp_path):
    log, metrics = make(tmp_path)
    record(log, ["a", "b"], [0.5, 2.0])
    record(log, None, [3.0], threshold=2.5, version=2)
    assert log_format.log_files(tmp_path, "predictions") == []  # nothing written on record
    log.flush()
    [path] = log_format.log_files(tmp_path, "predictions")
    table = pq.read_table(path).to_pydict()
    assert table["id"] == ["a", "b", None]
    assert table["version"] == [1, 1, 2]
    assert table["threshold"] == [1.0, 1.0, 2.5]
    assert table["is_anomaly"] == [False, True, True]
    assert table["request_id"] == ["req"] * 3
    assert sample(metrics, "aeserve_prediction_log_rows_total") == 3
    log.close()


def test_features_are_logged_only_when_asked(tmp_path):
    log, _ = make(tmp_path, features=True)
    record(log, ["a", "b"], [0.5, 2.0], features=np.array([[1, 2], [3, 4]], np.float32))
    log.close()  # close writes what waits
    [path] = log_format.log_files(tmp_path, "predictions")
    assert pq.read_table(path)["features"].to_pylist() == [[1.0, 2.0], [3.0, 4.0]]


def test_a_full_queue_drops_and_counts_instead_of_growing(tmp_path):
    log, metrics = make(tmp_path, max_pending_rows=3)
    record(log, None, [1.0, 1.0])
    record(log, None, [1.0, 1.0])  # 4 > 3: not queued
    assert sample(metrics, "aeserve_prediction_log_dropped_rows_total", reason="queue_full") == 2
    log.flush()
    assert sample(metrics, "aeserve_prediction_log_rows_total") == 2
    log.close()


def test_the_oldest_prediction_files_go_when_the_folder_is_full(tmp_path):
    log, metrics = make(tmp_path)
    record(log, None, np.arange(2000))
    log.flush()
    one_file = log_format.log_files(tmp_path, "predictions")[0].stat().st_size
    log.settings = PredictionLogSettings(tmp_path, flush_s=3600.0, max_bytes=int(2.5 * one_file))
    for _ in range(4):
        record(log, None, np.arange(2000))
        log.flush()
    files = log_format.log_files(tmp_path, "predictions")
    assert len(files) == 2  # two fit in 2.5 files' bytes
    assert sample(metrics, "aeserve_prediction_log_rotated_files_total") == 3
    log.close()


def test_feedback_joins_the_newest_prediction_and_counts_outcomes(tmp_path):
    log, metrics = make(tmp_path)
    record(log, ["a", "b", "c"], [2.0, 0.5, 0.1])
    log.flush()
    record(log, ["a"], [0.2], version=2)  # "a" again, later, by version 2: not flagged
    result = log.feedback("m", ["a", "b", "c", "zzz"], [1, 1, 0, 0])
    assert (result.received, result.matched, result.unmatched_ids) == (4, 3, ["zzz"])
    assert result.outcomes == {"false_negative": 2, "true_negative": 1}
    assert sample(metrics, "aeserve_feedback_labels_total", model="m", version="2",
                  outcome="false_negative") == 1
    assert sample(metrics, "aeserve_feedback_labels_total", model="m", version="1",
                  outcome="false_negative") == 1
    assert sample(metrics, "aeserve_feedback_unmatched_labels_total", model="m") == 1
    # the same join from the files alone
    joined = log_format.join_feedback(tmp_path)
    assert joined.version.tolist() == [2, 1, 1] and joined.label.tolist() == [1, 1, 0]
    assert joined.is_anomaly.tolist() == [False, False, False]
    assert joined.unmatched == {"m": 1}
    log.close()


def test_a_label_never_joins_a_prediction_made_after_it(tmp_path):
    log, _ = make(tmp_path)
    record(log, ["a"], [2.0])
    log.feedback("m", ["a"], [1])
    record(log, ["a"], [0.1], version=2)  # the same id reused afterwards
    log.flush()
    joined = log_format.join_feedback(tmp_path)
    assert joined.version.tolist() == [1] and joined.is_anomaly.tolist() == [True]
    log.close()


def test_a_record_the_log_cannot_hold_is_dropped_alone(tmp_path):
    """One request's bad id (here a lone surrogate, which no Parquet string can hold) costs
    only that request's rows: every other client's rows waiting in the same flush are written."""
    log, metrics = make(tmp_path)
    record(log, ["a", "b"], [0.5, 2.0])
    record(log, ["bad-\ud800"], [3.0])
    record(log, None, [1.5], version=2)
    log.flush()
    [path] = log_format.log_files(tmp_path, "predictions")
    table = pq.read_table(path).to_pydict()
    assert table["id"] == ["a", "b", None] and table["score"] == [0.5, 2.0, 1.5]
    assert sample(metrics, "aeserve_prediction_log_rows_total") == 3
    assert sample(metrics, "aeserve_prediction_log_dropped_rows_total", reason="unwritable") == 1
    log.close()


def test_labels_never_push_predictions_out_and_have_a_budget_of_their_own(tmp_path):
    log, _ = make(tmp_path)
    record(log, [f"p{i}" for i in range(500)], np.arange(500))
    log.flush()
    one_file = log_format.log_files(tmp_path, "predictions")[0].stat().st_size
    log.feedback("m", ["p0"], [1])
    one_label_file = log_format.log_files(tmp_path, "feedback")[0].stat().st_size
    for batch in range(2):  # two newer prediction files
        record(log, [f"q{batch}-{i}" for i in range(500)], np.arange(500))
        log.flush()
    log.settings = PredictionLogSettings(tmp_path, flush_s=3600.0, max_bytes=int(3.5 * one_file),
                                         max_label_bytes=int(2.5 * one_label_file))
    for i in range(1, 20):  # many labels: with the predictions, more than their budget
        result = log.feedback("m", [f"p{i}"], [1])
        assert result.matched == 1  # the oldest prediction file is still there to join
    assert len(log_format.log_files(tmp_path, "predictions")) == 3
    assert len(log_format.log_files(tmp_path, "feedback")) == 2  # their own 2.5 files' budget
    log.close()


def test_a_feedback_search_reads_a_bounded_share_of_the_log(tmp_path):
    log, _ = make(tmp_path)
    record(log, ["old"], [1.0])
    log.flush()
    for batch in range(3):
        record(log, [f"n{batch}-{i}" for i in range(200)], np.arange(200))
        log.flush()
    newest = log_format.log_files(tmp_path, "predictions")[-1].stat().st_size
    assert set(log_format.find_predictions(tmp_path, "m", ["old", "n2-0"])) == {"old", "n2-0"}
    # Within the newest file's bytes only: "old", three files back, is not read for.
    bounded = log_format.find_predictions(tmp_path, "m", ["old", "n2-0"], max_bytes=newest)
    assert set(bounded) == {"n2-0"}
    log.close()


def test_the_queue_is_bounded_in_bytes_too(tmp_path):
    """Long ids and logged features hold far more than their rows' count says."""
    log, metrics = make(tmp_path, features=True, max_pending_bytes=11_000)
    features = np.zeros((10, 100), np.float32)  # 4,000 bytes, plus 10 x (4 + 1) for the scores
    record(log, None, np.ones(10), features=features)
    record(log, None, np.ones(10), features=features)  # 8,100 bytes waiting
    record(log, None, np.ones(10), features=features)  # would be 12,150: not queued
    assert sample(metrics, "aeserve_prediction_log_dropped_rows_total", reason="queue_full") == 10
    ids = ["x" * 200] * 10  # 10 x (49 + 200) bytes of strings
    record(log, ids, np.ones(10), features=np.zeros((10, 1), np.float32))  # 10,680: queued
    assert sample(metrics, "aeserve_prediction_log_dropped_rows_total", reason="queue_full") == 10
    log.flush()  # the flush empties the count of bytes waiting with the rows
    record(log, None, np.ones(10), features=features)
    log.flush()
    assert sample(metrics, "aeserve_prediction_log_rows_total") == 40
    log.close()
