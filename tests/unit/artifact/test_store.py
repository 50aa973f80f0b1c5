"""The model store on the shipped model: load validates, publish claims the next number
atomically, and its errors are plain exceptions with no HTTP status."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from aeserve.artifact import store
from aeserve.artifact.card import CARD_FILENAME, ONNX_FILENAME, ModelCard
from aeserve.artifact.errors import ArtifactError, ModelLoadError
from aeserve.artifact.scores import verdicts
from aeserve.artifact.session import SessionConfig
from tests.helpers import SHIPPED_MODEL


def copy_version(root: Path, name: str = "m", version: int = 1) -> Path:
    target = root / name / str(version)
    shutil.copytree(SHIPPED_MODEL, target)
    card = json.loads((target / CARD_FILENAME).read_text())
    card["name"], card["version"] = name, version
    (target / CARD_FILENAME).write_text(json.dumps(card))
    return target


def test_load_the_shipped_model_and_score_its_own_training_offset():
    loaded = store.load_version("breast-cancer", 1, SHIPPED_MODEL, SessionConfig(provider="cpu"))
    assert loaded.card.name == "breast-cancer"
    assert loaded.session.providers == ["CPUExecutionProvider"]
    rows = np.asarray([loaded.card.preprocessing.offset], dtype=np.float32)
    out = loaded.session.run(rows, ("score", "feature_errors"))
    # the score is the mean of the per-feature errors (the card's score kind)
    assert out["score"][0] == pytest.approx(out["feature_errors"][0].mean(), rel=1e-5)
    assert verdicts(out["score"], loaded.card.threshold).tolist() == [False]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda path: (path / ONNX_FILENAME).write_bytes(b"not a graph"), "sha256"),
    (lambda path: (path / CARD_FILENAME).unlink(), "model.json is missing"),
    (lambda path: (path / ONNX_FILENAME).unlink(), "model.onnx is missing"),
    (lambda path: (path / CARD_FILENAME).write_text("{}"), "does not match the schema"),
])
def test_a_broken_version_is_refused_with_its_reason(tmp_path, edit, message):
    path = copy_version(tmp_path)
    edit(path)
    with pytest.raises(ModelLoadError, match=message) as caught:
        store.load_version("m", 1, path)
    assert isinstance(caught.value, ArtifactError) and not hasattr(caught.value, "status")


def test_a_card_that_names_another_folder_is_refused(tmp_path):
    path = copy_version(tmp_path, "m", 2)
    (tmp_path / "other").mkdir()
    with pytest.raises(ModelLoadError, match="card says m/2, folder is other/2"):
        store.load_version("other", 2, path)


def test_version_folders_ignore_staging_and_strays(tmp_path):
    for name in ("1", "2", "10", ".tmp-abc", "x", "0"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file")
    assert sorted(store.version_folders(tmp_path)) == [1, 2, 10]


def test_publish_claims_the_next_number_and_leaves_no_staging(tmp_path):
    model_dir = tmp_path / "m"
    card = ModelCard.read(SHIPPED_MODEL / CARD_FILENAME)
    published = []

    def publish_one() -> None:
        staging = store.staging_dir(model_dir)
        shutil.copy(SHIPPED_MODEL / ONNX_FILENAME, staging / ONNX_FILENAME)
        published.append(store.publish(staging, model_dir,
                                       lambda v: card.model_copy(update={"name": "m",
                                                                         "version": v})))

    threads = [threading.Thread(target=publish_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(c.version for c in published) == [1, 2, 3, 4]
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "3", "4"]
    for version in (1, 4):  # each published folder loads: card and graph agree
        assert store.load_version("m", version, model_dir / str(version)).version == version


def test_discard_removes_a_staging_folder(tmp_path):
    staging = store.staging_dir(tmp_path / "m")
    (staging / "partial").write_text("x")
    store.discard(staging)
    assert list((tmp_path / "m").iterdir()) == []
