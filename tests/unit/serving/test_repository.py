"""The repository without HTTP: version policies, refresh, failures and unload."""

from __future__ import annotations

import asyncio
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from aeserve.serving.batching import MicroBatcher
from aeserve.serving.errors import ModelNotReady, UnknownModel, UnknownVersion
from aeserve.serving.repository import ModelRepository
from aeserve.serving.settings import Settings
from tests.helpers import SHIPPED_MODEL, add_version


def batcher(name: str, version: int, card, session) -> MicroBatcher:
    return MicroBatcher(session.run, ThreadPoolExecutor(1), max_rows=64, max_delay_s=0.001)


def repository(root: Path) -> ModelRepository:
    repo = ModelRepository(Settings(models_dir=root), make_batcher=batcher)
    repo.refresh()
    return repo


def states(repo: ModelRepository, name: str) -> dict[int, str]:
    return {v: e.state for v, e in sorted(repo.models[name].versions.items())}


def test_latest_policy_serves_newest_and_falls_back_past_a_broken_one(tmp_path):
    for version in (1, 2):
        add_version(tmp_path, SHIPPED_MODEL, "m", version)
    add_version(tmp_path, SHIPPED_MODEL, "m", 3, tamper=True)
    repo = repository(tmp_path)
    assert states(repo, "m") == {1: "unloaded", 2: "ready", 3: "failed"}
    assert repo.get("m").version == 2
    assert "sha256" in repo.models["m"].versions[3].error
    assert "latest 1" in repo.models["m"].versions[1].error
    with pytest.raises(ModelNotReady, match="version 1 is unloaded"):
        repo.get("m", 1)


def test_specific_and_all_policies(tmp_path):
    for version in (1, 2, 3):
        add_version(tmp_path, SHIPPED_MODEL, "m", version)
    config = tmp_path / "m" / "config.json"
    config.write_text('{"version_policy": {"specific": {"versions": [1, 3, 7]}}}')
    repo = repository(tmp_path)
    assert states(repo, "m") == {1: "ready", 2: "unloaded", 3: "ready", 7: "failed"}
    assert repo.get("m").version == 3
    config.write_text('{"version_policy": {"all": {}}}')
    repo.refresh()
    assert states(repo, "m") == {1: "ready", 2: "ready", 3: "ready"}
    config.write_text('{"version_policy": {"latest": {"num_versions": 2}}}')
    repo.refresh()
    assert states(repo, "m") == {1: "unloaded", 2: "ready", 3: "ready"}


def test_invalid_policy_keeps_loaded_versions(tmp_path):
    add_version(tmp_path, SHIPPED_MODEL, "m", 1)
    repo = repository(tmp_path)
    (tmp_path / "m" / "config.json").write_text('{"version_policy": {"newest": {}}}')
    repo.refresh()
    assert repo.get("m").version == 1
    assert "config.json is invalid" in repo.models["m"].error


def test_an_invalid_config_json_is_logged_once_until_it_changes(tmp_path, caplog):
    add_version(tmp_path, SHIPPED_MODEL, "m", 1)
    config = tmp_path / "m" / "config.json"
    config.write_text('{"version_policy": {"newest": {}}}')
    caplog.set_level("INFO", logger="aeserve")
    repo = repository(tmp_path)
    for _ in range(3):  # every scan finds it, one line says so
        repo.refresh()

    def said(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records)

    assert said("config.json is invalid") == 1
    config.write_text('{"version_policy": {"older": {}}}')  # another mistake: said again
    repo.refresh()
    repo.refresh()
    assert said("config.json is invalid") == 2
    assert "serving with the defaults" in caplog.text
    config.write_text('{"version_policy": {"all": {}}}')
    repo.refresh()
    assert said("config.json is valid again") == 1 and repo.models["m"].error is None


def test_refresh_reuses_unchanged_versions_and_drops_deleted_ones(tmp_path):
    add_version(tmp_path, SHIPPED_MODEL, "m", 1)
    repo = repository(tmp_path)
    first = repo.get("m")
    repo.refresh()
    assert repo.get("m") is first  # same object: not reloaded
    add_version(tmp_path, SHIPPED_MODEL, "m", 2)
    repo.refresh()
    assert repo.get("m").version == 2
    # v1 left memory under "latest 1"; a request that still holds it finishes on its session
    assert repo.models["m"].versions[1].state == "unloaded"
    rows = np.zeros((2, first.card.input_dim), dtype=np.float32)
    assert first.session.run(rows, ("score",))["score"].shape == (2,)
    # the batcher was made when v1 loaded and closed when it stopped serving; a request that
    # still holds v1 runs alone on it
    assert first.batcher.closed and repo.get("m").batcher is not None
    assert not repo.get("m").batcher.closed
    result = asyncio.run(first.batcher.submit(rows, ("score",)))
    assert result["score"].shape == (2,)
    shutil.rmtree(tmp_path / "m" / "2")
    repo.refresh()
    assert repo.get("m").version == 1
    assert sorted(repo.models["m"].versions) == [1]


def test_failed_version_retried_only_when_its_files_change(tmp_path):
    failures = []
    add_version(tmp_path, SHIPPED_MODEL, "m", 1, tamper=True)
    repo = ModelRepository(Settings(models_dir=tmp_path), make_batcher=batcher,
                           on_load_failure=failures.append)
    repo.refresh()
    repo.refresh()
    assert len(failures) == 1
    shutil.copy(SHIPPED_MODEL / "model.onnx", tmp_path / "m" / "1" / "model.onnx")
    repo.refresh()
    assert repo.get("m").version == 1 and len(failures) == 1


def test_unload_and_load(tmp_path):
    add_version(tmp_path, SHIPPED_MODEL, "m", 1)
    repo = repository(tmp_path)
    repo.unload_model("m")
    with pytest.raises(UnknownModel):
        repo.get("m")
    repo.refresh()  # polling does not bring it back
    assert "m" not in repo.models
    assert repo.load_model("m").active.version == 1
    with pytest.raises(UnknownModel):
        repo.load_model("../m")
    with pytest.raises(UnknownModel):
        repo.unload_model("absent")


def test_lookups_name_what_is_missing(tmp_path):
    add_version(tmp_path, SHIPPED_MODEL, "m", 1)
    repo = repository(tmp_path)
    with pytest.raises(UnknownVersion, match="no version 4"):
        repo.get("m", 4)
    with pytest.raises(UnknownModel, match="unknown model 'z'"):
        repo.get("z")
    assert repo.default_name == "m" and repo.is_ready()


def test_a_graph_that_fails_its_test_run_is_one_failed_version(tmp_path, monkeypatch):
    from aeserve.artifact import session as session_module

    add_version(tmp_path, SHIPPED_MODEL, "m", 1)
    add_version(tmp_path, SHIPPED_MODEL, "other", 1)
    real_run = session_module.ModelSession.run

    def failing_run(self, rows, outputs):
        if "/m/" in str(self.path_for_test):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : kernel failed")
        return real_run(self, rows, outputs)

    real_init = session_module.ModelSession.__init__

    def init(self, onnx_path, card, config=session_module.DEFAULT_SESSION, **kwargs):
        self.path_for_test = onnx_path
        real_init(self, onnx_path, card, config, **kwargs)

    monkeypatch.setattr(session_module.ModelSession, "__init__", init)
    monkeypatch.setattr(session_module.ModelSession, "run", failing_run)
    repo = repository(tmp_path)
    failed = repo.models["m"].versions[1]
    assert failed.state == "failed" and "test inference failed" in failed.error
    assert repo.get("other").state == "ready"  # the other model serves


def test_unicode_digit_folders_and_unexpected_errors_never_stop_the_scan(tmp_path, monkeypatch):
    from aeserve.artifact import store

    add_version(tmp_path, SHIPPED_MODEL, "m", 1)
    (tmp_path / "m" / "\u00b2").mkdir()  # '²': str.isdigit() is true, int() refuses it
    add_version(tmp_path, SHIPPED_MODEL, "n", 1)
    real_load = store.load_version

    def load(name, version, path, config=None, root=None):
        if name == "n":
            raise MemoryError("no room for the graph")
        return real_load(name, version, path, config, root)

    monkeypatch.setattr(store, "load_version", load)
    repo = repository(tmp_path)
    assert sorted(repo.models["m"].versions) == [1] and repo.get("m").state == "ready"
    broken = repo.models["n"].versions[1]
    assert broken.state == "failed" and "MemoryError: no room for the graph" in broken.error


def test_config_json_sets_thresholds_without_a_new_export(tmp_path):
    from aeserve.artifact.scores import score_at_quantile

    for version in (1, 2):
        add_version(tmp_path, SHIPPED_MODEL, "m", version)
    config = tmp_path / "m" / "config.json"
    config.write_text('{"version_policy": {"all": {}}, '
                      '"thresholds": {"*": {"rule": "quantile:0.995"}, "2": {"value": 2.5}}}')
    repo = repository(tmp_path)
    one, two = repo.get("m", 1), repo.get("m", 2)
    card = one.stored_card
    assert card is not None and card.threshold != one.card.threshold  # the disk's card kept
    assert one.card.threshold == score_at_quantile(card.score_quantiles, 0.995)
    assert one.threshold() == {"value": one.card.threshold, "rule": "quantile:0.995",
                               "source": "config.json", "card_value": card.threshold}
    assert two.card.threshold == 2.5 and two.threshold()["rule"] == "value:2.5"
    old_batcher = two.batcher

    # The next scan applies a change; versions whose threshold did not change are kept as
    # they are; a version whose threshold changed gets a new batcher (it scores with it).
    config.write_text('{"version_policy": {"all": {}}, "thresholds": {"2": {"value": 3.0}}}')
    repo.refresh()
    assert repo.get("m", 2).card.threshold == 3.0 and repo.get("m", 2).batcher is not old_batcher
    assert repo.get("m", 1).threshold()["source"] == "card"
    assert repo.get("m", 1).card == card
    unchanged = repo.get("m", 2)
    repo.refresh()
    assert repo.get("m", 2) is unchanged

    # A bad threshold is refused by name and the loaded versions keep serving.
    for bad, words in [('{"2": {"value": 1, "rule": "quantile:0.9"}}', "exactly one"),
                       ('{"2": {"rule": "sigma:3"}}', "quantile:Q"),
                       ('{"latest": {"value": 1}}', "version numbers or '*'")]:
        config.write_text('{"version_policy": {"all": {}}, "thresholds": ' + bad + '}')
        repo.refresh()
        assert words in repo.models["m"].error and repo.get("m", 2).card.threshold == 3.0


def test_a_shadow_version_is_loaded_beside_the_active_one_and_never_active(tmp_path):
    for version in (1, 2, 3):
        add_version(tmp_path, SHIPPED_MODEL, "m", version)
    config = tmp_path / "m" / "config.json"
    config.write_text('{"shadow": {"version": 3, "fraction": 0.25}}')
    repo = repository(tmp_path)
    model = repo.models["m"]
    # latest 1 counts the versions but the shadow: 2 answers, 3 shadows it, 1 is not loaded
    assert model.active.version == 2 and model.shadow.version == 3
    assert model.shadow_setting.fraction == 0.25
    assert {n: v.state for n, v in model.versions.items()} == {
        1: "unloaded", 2: "ready", 3: "ready"}
    assert repo.get("m").version == 2 and repo.get("m", 3).version == 3  # pinned still answers

    # An older version may shadow too, whatever the policy loads; without a shadow entry the
    # newest is active again at the next scan.
    config.write_text('{"version_policy": {"specific": {"versions": [3]}}, '
                      '"shadow": {"version": 1, "fraction": 1.0}}')
    repo.refresh()
    model = repo.models["m"]
    assert model.active.version == 3 and model.shadow.version == 1
    config.write_text("{}")
    repo.refresh()
    assert repo.models["m"].active.version == 3 and repo.models["m"].shadow is None

    # A shadow that is not on disk is a failed version, and the active one keeps serving.
    config.write_text('{"shadow": {"version": 9, "fraction": 0.5}}')
    repo.refresh()
    model = repo.models["m"]
    assert model.active.version == 3 and model.shadow is None
    assert model.versions[9].state == "failed"
    for bad in ('{"shadow": {"version": 2, "fraction": 0}}',
                '{"shadow": {"version": 0, "fraction": 0.5}}',
                '{"shadow": {"version": 2}}'):
        config.write_text(bad)
        repo.refresh()
        assert "shadow" in repo.models["m"].error and repo.models["m"].active.version == 3
