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

from pydantic import ValidationError

from service.card import (
    CARD_FILENAME,
    MODEL_NAME_PATTERN,
    ONNX_FILENAME,
    ModelCard,
    file_sha256,
)
from service.errors import ModelNotReady, UnknownModel, UnknownVersion
from service.policy import PolicyError, VersionPolicy, read_model_config
from service.runtime import ModelLoadError, ModelSession, ProviderUnavailable
from service.settings import Settings

log = logging.getLogger("aeserve.repository")

State = Literal["ready", "failed", "unloaded"]
Fingerprint = tuple[tuple[int, int], ...]


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

    def summary(self) -> dict:
        return {"version": self.version, "state": self.state, "error": self.error,
                "providers": self.session.providers if self.session else []}


@dataclass
class Model:
    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    policy: str = "latest 1"
    error: str | None = None

    @cached_property
    def active(self) -> ModelVersion | None:
        """The highest ready version (a Model is rebuilt, never edited, on each refresh)."""
        ready = [v for v in self.versions.values() if v.state == "ready"]
        return max(ready, key=lambda v: v.version, default=None)


def fingerprint(path: Path) -> Fingerprint:
    """Size and modification time of the two files: cheap to read on every poll."""
    stats = []
    for filename in (CARD_FILENAME, ONNX_FILENAME):
        try:
            stat = (path / filename).stat()
            stats.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            stats.append((-1, -1))
    return tuple(stats)


def load_version(name: str, version: int, path: Path, settings: Settings) -> ModelVersion:
    """Validate and load one version folder; never raises, a failure is returned as state."""
    stamp = fingerprint(path)
    try:
        card = _read_card(path)
        if card.name != name or card.version != version:
            raise ModelLoadError(
                f"card says {card.name}/{card.version}, folder is {name}/{version}")
        onnx_path = path / ONNX_FILENAME
        if not onnx_path.is_file():
            raise ModelLoadError(f"{ONNX_FILENAME} is missing")
        digest = file_sha256(onnx_path)
        if digest != card.onnx_sha256:
            raise ModelLoadError(f"sha256 of {ONNX_FILENAME} is {digest[:12]}..., the card says "
                                 f"{card.onnx_sha256[:12]}...")
        session = ModelSession(onnx_path, card, settings)
    except ModelLoadError as exc:
        log.error("model %s version %s failed to load: %s", name, version, exc,
                  extra={"model": name, "version": version})
        return ModelVersion(name, version, path, "failed", error=str(exc), fingerprint=stamp,
                            provider_error=isinstance(exc, ProviderUnavailable))
    log.info("model %s version %s ready on %s", name, version, session.providers,
             extra={"model": name, "version": version, "providers": session.providers})
    return ModelVersion(name, version, path, "ready", card=card, session=session,
                        fingerprint=stamp)


def _read_card(path: Path) -> ModelCard:
    card_path = path / CARD_FILENAME
    if not card_path.is_file():
        raise ModelLoadError(f"{CARD_FILENAME} is missing")
    try:
        return ModelCard.read(card_path)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise ModelLoadError(f"{CARD_FILENAME} does not match the schema: {problems}") from None


def version_folders(model_dir: Path) -> dict[int, Path]:
    """Integer-named folders (1, 2, ...); staging folders and stray files are ignored."""
    found = {}
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) > 0:
            found[int(child.name)] = child
    return found


class ModelRepository:
    """All models under one folder; lookups by name and optional version; rescans on demand."""

    def __init__(self, settings: Settings,
                 on_load_failure: Callable[[ModelVersion], None] | None = None) -> None:
        self.settings = settings
        self.root = Path(settings.models_dir)
        self.models: dict[str, Model] = {}
        self.unloaded: set[str] = set()
        self._on_load_failure = on_load_failure
        self._lock = threading.Lock()

    # -- scanning -----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Rescan the repository and swap in the new table of models."""
        with self._lock:
            if not self.root.is_dir():
                log.error("model repository %s does not exist", self.root)
                self.models = {}
                return
            table = {}
            for model_dir in sorted(self.root.iterdir()):
                name = model_dir.name
                if (not model_dir.is_dir() or not MODEL_NAME_PATTERN.match(name)
                        or name in self.unloaded):
                    continue
                model = self._scan_model(name, model_dir, self.models.get(name))
                if model.versions or model.error:
                    table[name] = model
            self.models = table

    def _scan_model(self, name: str, model_dir: Path, previous: Model | None) -> Model:
        try:
            policy = read_model_config(model_dir).version_policy
        except PolicyError as exc:
            if previous is not None:  # keep serving what was loaded under the last valid policy
                log.error("model %s: %s; keeping the loaded versions", name, exc)
                return replace(previous, error=str(exc))
            log.error("model %s: %s", name, exc)
            policy = VersionPolicy()
        on_disk = version_folders(model_dir)
        candidates, wanted = policy.candidates(list(on_disk))
        versions: dict[int, ModelVersion] = {}
        ready = 0
        for number in candidates:
            if wanted is not None and ready >= wanted:
                break
            path = on_disk.get(number)
            if path is None:
                versions[number] = ModelVersion(name, number, model_dir / str(number), "failed",
                                                error="version folder not found")
                continue
            entry = self._load_or_reuse(name, number, path, previous)
            versions[number] = entry
            ready += entry.state == "ready"
        for number, path in on_disk.items():
            if number not in versions:
                versions[number] = ModelVersion(
                    name, number, path, "unloaded",
                    error=f"not served under version policy {policy.describe()}")
        return Model(name, versions, policy.describe())

    def _load_or_reuse(self, name: str, number: int, path: Path,
                       previous: Model | None) -> ModelVersion:
        old = previous.versions.get(number) if previous else None
        if old is not None and old.state != "unloaded" and old.fingerprint == fingerprint(path):
            return old
        entry = load_version(name, number, path, self.settings)
        if entry.state == "failed" and self._on_load_failure is not None:
            self._on_load_failure(entry)
        return entry

    def load_model(self, name: str) -> Model:
        """Load (or reload) one model by name: the repository extension's `load`."""
        if not MODEL_NAME_PATTERN.match(name) or not (self.root / name).is_dir():
            raise UnknownModel(f"no model folder {name!r} in the repository", model=name)
        self.unloaded.discard(name)
        self.refresh()
        return self.models[name]

    def unload_model(self, name: str) -> None:
        """Stop serving a model until it is loaded again; polling leaves it alone."""
        if name not in self.models:
            raise UnknownModel(f"model {name!r} is not loaded", model=name,
                               available=sorted(self.models))
        with self._lock:
            self.unloaded.add(name)
            self.models = {k: v for k, v in self.models.items() if k != name}

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
