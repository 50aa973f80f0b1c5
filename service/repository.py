"""The model repository: `models/<name>/<version>/{model.onnx, model.json}` on disk, loaded.

Every version is validated before it serves: the card against the schema and against its folder,
the sha256 of model.onnx against the card, the graph's inputs and outputs, and one test inference.
A version that fails is kept in the listing with its reason and never takes down another model.
The active version of a model is its highest *ready* version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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
from service.runtime import ModelLoadError, ModelSession
from service.settings import Settings

log = logging.getLogger("aeserve.repository")


@dataclass
class ModelVersion:
    name: str
    version: int
    path: Path
    state: Literal["ready", "failed"]
    card: ModelCard | None = None
    session: ModelSession | None = None
    error: str | None = None

    def summary(self) -> dict:
        return {"version": self.version, "state": self.state, "error": self.error,
                "providers": self.session.providers if self.session else []}


@dataclass
class Model:
    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    @property
    def active(self) -> ModelVersion | None:
        ready = [v for v in self.versions.values() if v.state == "ready"]
        return max(ready, key=lambda v: v.version, default=None)


def load_version(name: str, version: int, path: Path, settings: Settings) -> ModelVersion:
    """Validate and load one version folder; never raises, a failure is returned as state."""
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
        log.error("model %s version %s failed to load: %s", name, version, exc)
        return ModelVersion(name, version, path, "failed", error=str(exc))
    log.info("model %s version %s ready (providers %s)", name, version, session.providers)
    return ModelVersion(name, version, path, "ready", card=card, session=session)


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


class ModelRepository:
    """All models under one folder, loaded once; lookups by name and optional version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.models_dir)
        self.models: dict[str, Model] = {}

    def load(self) -> None:
        if not self.root.is_dir():
            log.error("model repository %s does not exist", self.root)
            return
        for model_dir in sorted(self.root.iterdir()):
            if not model_dir.is_dir() or not MODEL_NAME_PATTERN.match(model_dir.name):
                continue
            model = Model(model_dir.name)
            for version_dir in sorted(model_dir.iterdir()):
                if version_dir.is_dir() and version_dir.name.isdigit() and int(version_dir.name):
                    version = int(version_dir.name)
                    model.versions[version] = load_version(model.name, version, version_dir,
                                                           self.settings)
            if model.versions:
                self.models[model.name] = model

    @property
    def default_name(self) -> str | None:
        if self.settings.default_model is not None:
            return self.settings.default_model
        return next(iter(sorted(self.models)), None)

    def get(self, name: str | None = None, version: int | None = None) -> ModelVersion:
        """The ready version to serve, or a typed 404/503 naming what is missing."""
        if name is None:
            name = self.default_name
            if name is None:
                raise UnknownModel(f"no model is loaded from {self.root.name!r}; the repository "
                                   "is empty", available=[])
        model = self.models.get(name)
        if model is None:
            raise UnknownModel(f"unknown model {name!r}", model=name,
                               available=sorted(self.models))
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
        return name is not None and name in self.models and self.models[name].active is not None
