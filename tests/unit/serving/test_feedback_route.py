"""The feedback route's failures are typed: a log folder that refuses the labels is a 503 that
says nothing was stored, not a 500."""

from __future__ import annotations

from fastapi.testclient import TestClient

from aeserve.artifact import prediction_log as log_format
from aeserve.serving.app import create_app
from aeserve.serving.settings import Settings
from tests.helpers import ROOT


def test_a_log_folder_that_refuses_the_labels_is_a_typed_503(tmp_path, monkeypatch):
    app = create_app(Settings(models_dir=ROOT / "models", poll_interval_s=0,
                              log_level="WARNING", prediction_log=tmp_path / "log"))
    with TestClient(app) as client:
        def refuse(*_args, **_kwargs):  # as a read-only or full disk does
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(log_format, "write_table", refuse)
        answer = client.post("/models/breast-cancer/feedback",
                             json={"ids": ["a"], "labels": [1]})
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "prediction_log_unwritable"
        assert "Permission denied" in error["message"]
