"""The model repository: `models/<name>/<version>/{model.onnx, model.json}` on disk, loaded.

Every version is validated before it serves: the card against the schema and against its folder,
the sha256 of model.onnx against the card, the graph's inputs and outputs, and one test inference.
A version that fails is listed with its reason and never takes down another model or version.

`refresh()` rescans the folder (at start-up, on each poll, on demand) and builds a new table of
models that replaces the old one in a single assignment. Unchanged versions (same file sizes and
modification times) are reused, not reloaded; a failed version is retried only when its files
change. A request holds its `ModelVersion` for its whole life, so a version deleted meanwhile stops
serving new requests while in-flight ones finish on the session they started with.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

from aeserve.artifact import store
from aeserve.artifact.alarms import AlarmPolicy
from aeserve.artifact.card import ModelCard
from aeserve.artifact.errors import ModelLoadError, ProviderUnavailable
from aeserve.artifact.session import ModelSession, SessionConfig
from aeserve.artifact.store import Fingerprint
from aeserve.serving.batching import MicroBatcher
from aeserve.serving.errors import ModelNotReady, UnknownModel, UnknownVersion
from aeserve.serving.policy import PolicyError, ShadowSetting, VersionPolicy, read_model_config
from aeserve.serving.settings import Settings, session_config
from aeserve.serving.thresholds import (
    FROM_CARD,
    FROM_CONFIG,
    ThresholdSetting,
    effective_card,
    setting_for,
)

log = logging.getLogger("aeserve.repository")

State = Literal["ready", "failed", "unloaded"]


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path
    state: State
    card: ModelCard | None = None
    session: ModelSession | None = None
    error: str | None = None
    fingerprint: Fingerprint = ()
    provider_error: bool = False
    #: Made when the version loads (ready versions only), closed when it stops serving.
    batcher: MicroBatcher | None = None
    #: The card as exported, where config.json replaced its threshold in `card` (else None).
    stored_card: ModelCard | None = None

    def summary(self) -> dict:
        return {"version": self.version, "state": self.state, "error": self.error,
                "providers": self.session.providers if self.session else []}

    def threshold(self) -> dict | None:
        """The threshold in force, its rule, and where it came from (None unless ready)."""
        if self.card is None:
            return None
        return {"value": self.card.threshold, "rule": self.card.threshold_rule,
                "source": FROM_CONFIG if self.stored_card is not None else FROM_CARD,
                "card_value": (self.stored_card or self.card).threshold}


@dataclass
class Model:
    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    policy: str = "latest 1"
    error: str | None = None
    #: config.json's shadow version and the share of traffic it scores (None: no shadow).
    shadow_setting: ShadowSetting | None = None
    #: config.json's alarm policy for streams (its defaults when config.json has none).
    alarm: AlarmPolicy = field(default_factory=AlarmPolicy)

    @cached_property
    def active(self) -> ModelVersion | None:
        """The highest ready version but the shadow (a Model is rebuilt, never edited, on
        each refresh)."""
        shadow = self.shadow_setting.version if self.shadow_setting else None
        ready = [v for v in self.versions.values() if v.state == "ready" and v.version != shadow]
        return max(ready, key=lambda v: v.version, default=None)

    @cached_property
    def shadow(self) -> ModelVersion | None:
        """The shadow version when it is ready and there is an active version to shadow."""
        if self.shadow_setting is None or self.active is None:
            return None
        entry = self.versions.get(self.shadow_setting.version)
        return entry if entry is not None and entry.state == "ready" else None


def load_version(name: str, version: int, path: Path, config: SessionConfig,
                 root: Path | None = None) -> ModelVersion:
    """Validate and load one version folder; never raises, a failure is returned as state."""
    try:
        loaded = store.load_version(name, version, path, config, root=root)
    except Exception as exc:  # ModelLoadError, or anything unforeseen: never stops the scan
        if isinstance(exc, ModelLoadError):
            log.error("model %s version %s failed to load: %s", name, version, exc,
                      extra={"model": name, "version": version})
            reason = str(exc)
        else:
            log.exception("model %s version %s failed to load", name, version,
                          extra={"model": name, "version": version})
            reason = f"unexpected error while loading: {type(exc).__name__}: {exc}"
        return ModelVersion(name, version, path, "failed", error=reason,
                            fingerprint=store.fingerprint(path),
                            provider_error=isinstance(exc, ProviderUnavailable))
    log.info("model %s version %s ready on %s", name, version, loaded.session.providers,
             extra={"model": name, "version": version, "providers": loaded.session.providers})
    return ModelVersion(name, version, path, "ready", card=loaded.card, session=loaded.session,
                        fingerprint=loaded.fingerprint)


class ModelRepository:
    """All models under one folder; lookups by name and optional version; rescans on demand."""

    def __init__(self, settings: Settings,
                 make_batcher: Callable[[str, int, ModelCard, ModelSession], MicroBatcher],
                 on_load_failure: Callable[[ModelVersion], None] | None = None) -> None:
        self.settings = settings
        self.root = Path(settings.models_dir)
        self.session_config = session_config(settings)
        self.models: dict[str, Model] = {}
        self.unloaded: set[str] = set()
        self._make_batcher = make_batcher
        self._on_load_failure = on_load_failure
        self._lock = threading.Lock()
        #: Each model's config.json problem as last logged: said once until it changes.
        self._config_problems: dict[str, str] = {}

    # -- scanning -----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Rescan the repository and swap in the new table of models."""
        with self._lock:
            if not self.root.is_dir():
                log.error("model repository %s does not exist", self.root)
                previous, self.models = self.models, {}
                _close_gone(previous, self.models)
                return
            table = {}
            for model_dir in sorted(self.root.iterdir()):
                name = model_dir.name
                if (not model_dir.is_dir() or not store.is_model_name(name)
                        or name in self.unloaded):
                    continue
                try:
                    model = self._scan_model(name, model_dir, self.models.get(name))
                except OSError as exc:  # the folder went away or cannot be read mid-scan
                    log.error("model %s cannot be scanned: %s", name, exc)
                    reason = f"cannot be scanned: {exc.strerror or type(exc).__name__}"
                    previous = self.models.get(name)
                    model = (replace(previous, error=reason) if previous is not None
                             else Model(name, error=reason))
                if model.versions or model.error:
                    table[name] = model
            previous, self.models = self.models, table
            _close_gone(previous, table)

    def _scan_model(self, name: str, model_dir: Path, previous: Model | None) -> Model:
        try:
            config = read_model_config(model_dir)
            policy, thresholds, shadow, alarm = (config.version_policy, config.thresholds,
                                                 config.shadow, config.alarm)
            if self._config_problems.pop(name, None) is not None:
                log.info("model %s: config.json is valid again", name)
        except PolicyError as exc:
            said = self._config_problems.get(name) == str(exc)
            self._config_problems[name] = str(exc)
            if previous is not None:  # keep serving what was loaded under the last valid config
                if not said:
                    log.error("model %s: %s; keeping the loaded versions", name, exc)
                return replace(previous, error=str(exc))
            if not said:
                log.error("model %s: %s; serving with the defaults (every version, the "
                          "cards' thresholds, no shadow) until it is fixed", name, exc)
            policy, thresholds, shadow, alarm = VersionPolicy(), {}, None, AlarmPolicy()
        on_disk = store.version_folders(model_dir)
        candidates, wanted = policy.candidates(list(on_disk))
        shadow_number = shadow.version if shadow is not None else None
        # The shadow is loaded whatever the policy says, and does not count among its versions.
        candidates = [n for n in candidates if n != shadow_number]
        if shadow_number is not None:
            candidates.insert(0, shadow_number)
        versions: dict[int, ModelVersion] = {}
        ready = 0
        for number in candidates:
            if wanted is not None and ready >= wanted and number != shadow_number:
                break
            path = on_disk.get(number)
            if path is None:
                versions[number] = ModelVersion(name, number, model_dir / str(number), "failed",
                                                error="version folder not found")
                continue
            entry = self._load_or_reuse(name, number, path, previous,
                                        setting_for(thresholds, number))
            versions[number] = entry
            ready += entry.state == "ready" and number != shadow_number
        for number, path in on_disk.items():
            if number not in versions:
                versions[number] = ModelVersion(
                    name, number, path, "unloaded",
                    error=f"not served under version policy {policy.describe()}")
        return Model(name, versions, policy.describe(), shadow_setting=shadow, alarm=alarm)

    def _load_or_reuse(self, name: str, number: int, path: Path, previous: Model | None,
                       setting: ThresholdSetting | None) -> ModelVersion:
        """The version, loaded (or the last scan's, when its files are unchanged), serving with
        `setting`'s threshold, else its card's."""
        old = previous.versions.get(number) if previous else None
        if (old is not None and old.state != "unloaded"
                and old.fingerprint == store.fingerprint(path)):
            if old.state != "ready" or effective_card(old.stored_card or old.card,
                                                       setting) == old.card:
                return old
            # Same files, another threshold: a new entry with its own batcher; the old one
            # closes with the scan, after its in-flight batches.
            return self._serving(old, old.stored_card or old.card, setting)
        entry = load_version(name, number, path, self.session_config, self.root)
        if entry.state == "ready":
            return self._serving(entry, entry.card, setting)
        if self._on_load_failure is not None:
            self._on_load_failure(entry)
        return entry

    def _serving(self, entry: ModelVersion, stored: ModelCard,
                 setting: ThresholdSetting | None) -> ModelVersion:
        """`entry` ready to serve with the threshold in force, and a batcher that uses it."""
        card = effective_card(stored, setting)
        if setting is not None:
            log.info("model %s version %s threshold %s from %s (%s; the card says %s)",
                     entry.name, entry.version, card.threshold, FROM_CONFIG,
                     card.threshold_rule, stored.threshold,
                     extra={"model": entry.name, "version": entry.version})
        return replace(entry, card=card, stored_card=None if setting is None else stored,
                       batcher=self._make_batcher(entry.name, entry.version, card,
                                                  entry.session))

    def load_model(self, name: str) -> Model:
        """Load (or reload) one model by name: the repository extension's `load`."""
        if not store.is_model_name(name) or not (self.root / name).is_dir():
            raise UnknownModel(f"no model folder {name!r} in the repository", model=name)
        self.unloaded.discard(name)
        self.refresh()
        found = self.models.get(name)
        return found if found is not None else Model(
            name, error="the folder holds no version folders (models/NAME/1, 2, ...)")

    def unload_model(self, name: str) -> None:
        """Stop serving a model until it is loaded again; polling leaves it alone."""
        if name not in self.models:
            raise UnknownModel(f"model {name!r} is not loaded", model=name,
                               available=sorted(self.models))
        with self._lock:
            self.unloaded.add(name)
            previous = self.models
            self.models = {k: v for k, v in previous.items() if k != name}
            _close_gone(previous, self.models)

    def provider_failures(self) -> list[ModelVersion]:
        return [v for m in self.models.values() for v in m.versions.values() if v.provider_error]

    # -- lookups ------------------------------------------------------------------------------

    @property
    def default_name(self) -> str | None:
        if self.settings.default_model is not None:
            return self.settings.default_model
        return next(iter(sorted(self.models)), None)

    def get(self, name: str | None = None, version: int | None = None) -> ModelVersion:
        """The ready version to serve, or a typed 404/503 naming what is missing."""
        models = self.models  # one read: a concurrent refresh swaps the whole table
        if name is None:
            name = self.default_name
            if name is None:
                raise UnknownModel(f"no model is loaded from {self.root.name!r}; the repository "
                                   "is empty", available=[])
        model = models.get(name)
        if model is None:
            raise UnknownModel(f"unknown model {name!r}", model=name, available=sorted(models))
        if version is None:
            active = model.active
            if active is None:
                raise ModelNotReady(f"model {name!r} has no ready version", model=name,
                                    versions=[v.summary() for v in model.versions.values()])
            return active
        entry = model.versions.get(version)
        if entry is None:
            raise UnknownVersion(f"model {name!r} has no version {version}", model=name,
                                 available=sorted(model.versions))
        if entry.state != "ready":
            raise ModelNotReady(f"model {name!r} version {version} is {entry.state}: "
                                f"{entry.error}", model=name, version=version)
        return entry

    def is_ready(self) -> bool:
        name = self.default_name
        model = self.models.get(name) if name is not None else None
        return model is not None and model.active is not None


def _close_gone(before: dict[str, Model], after: dict[str, Model]) -> None:
    """Close the batchers of the versions that no longer serve (replaced, removed, unloaded)."""
    kept = {id(v) for m in after.values() for v in m.versions.values()}
    for model in before.values():
        for entry in model.versions.values():
            if entry.batcher is not None and id(entry) not in kept:
                entry.batcher.close()
