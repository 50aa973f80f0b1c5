"""The stream runner's scoring of messages, without a broker: on the shipped row model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aeserve.artifact.alarms import AlarmPolicy
from aeserve.batch.model import load_model
from aeserve.batch.stream_runner import alarm_policy
from aeserve.batch.stream_scorer import MessageError, StreamScorer, parse_message
from tests.helpers import SHIPPED_MODEL


@pytest.fixture(scope="module")
def scorer() -> StreamScorer:
    return StreamScorer(load_model(SHIPPED_MODEL), AlarmPolicy(smoothing="none", k=1, n=1),
                        max_series=10, idle_s=60.0)


def test_a_row_model_scores_every_reading_as_its_session_does(scorer):
    rows = np.tile(np.asarray(scorer.card.preprocessing.offset, dtype=np.float32), (3, 1))
    rows[2] += 50 * np.asarray(scorer.card.preprocessing.scale, dtype=np.float32)
    messages = [json.dumps({"series": "a", "rows": rows[:2].tolist(), "id": 7}).encode(),
                json.dumps({"series": "a", "row": rows[2].tolist()}).encode()]
    first, second = scorer.score(messages)
    expected = scorer.session.run(rows, ("score",))["score"]
    assert first["id"] == 7 and "id" not in second
    assert first["scores"] + second["scores"] == expected.tolist()
    assert second["is_anomaly"] == [True] and second["events"] == ["start"]
    assert first["alarm"] == [False, False] and second["alarm"] == [True]


@pytest.mark.parametrize(("message", "code"), [
    (b"{nope", "malformed_json"),
    (b"[1, 2]", "missing_instances"),
    (b'{"series": "a", "rows": [[1.0]], "extra": 1}', "invalid_parameter"),
    (b'{"series": "a"}', "missing_instances"),
    (b'{"rows": [[1.0]]}', "missing_instances"),
    (b'{"series": "a", "rows": [[1.0]], "row": [1.0]}', "missing_instances"),
    (b'{"series": true, "row": [1.0]}', "invalid_instances"),
    (b'{"series": "", "row": [1.0]}', "invalid_instances"),
    (b'{"series": "a", "row": [1.0], "id": [1]}', "invalid_ids"),
    (b'{"series": "a", "rows": []}', "empty_instances"),
    (b'{"series": "a", "rows": "x"}', "invalid_instances"),
    (b'{"series": "a", "rows": [[1.0, 2.0]]}', "wrong_width"),
    (b'{"series": "a", "rows": [[1.0], [1.0, 2.0]]}', "ragged_rows"),
    (b'{"series": "a", "rows": [{"g": 1.0}]}', "feature_mismatch"),
    (b'{"series": "a", "rows": [["1.0"]]}', "non_numeric"),
    (b'{"series": "a", "rows": [[NaN]]}', "non_finite"),
    (b'{"series": "a", "rows": [[1e39]]}', "non_finite"),
    (b'{"series": "a", "rows": [[1' + b"0" * 400 + b']]}', "non_finite"),  # no OverflowError
])
def test_bad_messages_are_named_as_the_stream_route_names_them(message, code):
    with pytest.raises(MessageError) as caught:
        parse_message(message, features=["f"])
    assert caught.value.code == code


def test_a_message_may_name_its_features():
    readings = parse_message(b'{"series": 7, "rows": [{"g": 2, "f": 1.5}], "id": "m1"}',
                             features=["f", "g"])
    assert readings.series == 7 and readings.id == "m1"
    assert readings.rows.tolist() == [[1.5, 2.0]] and readings.rows.dtype == np.float32


def test_a_refused_message_is_answered_with_itself_and_the_rest_are_scored(scorer):
    width = len(scorer.features)
    good = json.dumps({"series": "b", "row": [0.0] * width}).encode()
    answers = scorer.score([b'{"series": "b", "row": [1]}', good])
    assert answers[0]["error"]["code"] == "wrong_width"
    assert answers[0]["message"] == '{"series": "b", "row": [1]}'
    assert len(answers[1]["scores"]) == 1


def test_readings_whose_scores_overflow_are_refused_and_leave_no_trace(scorer):
    """A reading within float32 whose squared error is not: its message is answered with
    the error, and the series' later messages in the batch are scored without it."""
    width = len(scorer.features)
    offset = np.asarray(scorer.card.preprocessing.offset, dtype=np.float64)
    huge = (offset + 1e30).tolist()
    fine = [offset.tolist(), (offset + 1.0).tolist()]
    answers = scorer.score([json.dumps({"series": "h", "row": fine[0]}).encode(),
                            json.dumps({"series": "h", "row": huge}).encode(),
                            json.dumps({"series": "h", "rows": [fine[1]]}).encode()])
    assert answers[1]["error"]["code"] == "non_finite_result"
    expected = scorer.session.run(np.asarray(fine, dtype=np.float32), ("score",))["score"]
    assert answers[0]["scores"] + answers[2]["scores"] == expected.tolist()
    assert len(huge) == width


def test_the_alarm_policy_comes_from_the_flag_then_config_json(tmp_path):
    model = tmp_path / "m"
    (model / "1").mkdir(parents=True)
    assert alarm_policy(model, None) == AlarmPolicy()
    (model / "config.json").write_text(json.dumps({"alarm": {"k": 1, "n": 2}}))
    assert alarm_policy(model / "1", None) == AlarmPolicy(k=1, n=2)
    assert alarm_policy(model, '{"smoothing": "none"}') == AlarmPolicy(smoothing="none")
