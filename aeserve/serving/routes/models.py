"""GET /models, /models/{name}, /models/{name}/versions/{version}: what is loaded, and its card;
.../drift: how the version's recent rows compare with its card's reference; and .../shadow: how
the shadow version's verdicts compare with the active version's (serving/shadow.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from aeserve.serving.dataplane import parse_version, resolve
from aeserve.serving.deps import get_repository
from aeserve.serving.errors import DriftUnavailable, NoShadow, UnknownModel, UnknownVersion
from aeserve.serving.repository import Model, ModelRepository, ModelVersion
from aeserve.serving.shadow import shadow_report

router = APIRouter(tags=["models"])
Repo = Annotated[ModelRepository, Depends(get_repository)]


def model_summary(model: Model, default: str | None) -> dict[str, Any]:
    active = model.active
    return {
        "name": model.name,
        "default": model.name == default,
        "active_version": active.version if active else None,
        "version_policy": model.policy,
        "shadow": _shadow_summary(model),
        "error": model.error,
        "versions": [v.summary() for v in sorted(model.versions.values(),
                                                  key=lambda v: v.version)],
    }


def _shadow_summary(model: Model) -> dict[str, Any] | None:
    setting = model.shadow_setting
    if setting is None:
        return None
    entry = model.versions.get(setting.version)
    return {"version": setting.version, "fraction": setting.fraction,
            "state": entry.state if entry is not None else "failed",
            "comparing": model.shadow is not None}


def _version_detail(entry: ModelVersion) -> dict[str, Any]:
    card = entry.stored_card or entry.card  # the card as exported; the threshold in force apart
    return {**entry.summary(), "name": entry.name, "threshold": entry.threshold(),
            "card": card.model_dump(mode="json") if card else None}


@router.get("/models", summary="List models, their versions and states")
async def list_models(repository: Repo) -> dict[str, Any]:
    default = repository.default_name
    return {"default_model": default,
            "models": [model_summary(m, default) for _, m in sorted(repository.models.items())]}


@router.get("/models/{name}", summary="One model: versions, states and the active card")
async def get_model(name: str, repository: Repo) -> dict[str, Any]:
    model = repository.models.get(name)
    if model is None:
        raise UnknownModel(f"unknown model {name!r}", model=name,
                           available=sorted(repository.models))
    summary = model_summary(model, repository.default_name)
    active = model.active
    summary["providers"] = active.session.providers if active else []
    summary["threshold"] = active.threshold() if active else None
    card = (active.stored_card or active.card) if active else None
    summary["card"] = card.model_dump(mode="json") if card else None
    return summary


@router.get("/models/{name}/versions/{version}", summary="One version: state and card")
async def get_version(name: str, version: str, repository: Repo) -> dict[str, Any]:
    if name not in repository.models:
        raise UnknownModel(f"unknown model {name!r}", model=name,
                           available=sorted(repository.models))
    number = parse_version(version)
    entry = repository.models[name].versions.get(number)
    if entry is None:
        raise UnknownVersion(f"model {name!r} has no version {number}", model=name,
                             available=sorted(repository.models[name].versions))
    return _version_detail(entry)


def _drift(entry: ModelVersion, settings_off: bool) -> dict[str, Any]:
    monitor = entry.batcher.drift if entry.batcher is not None else None
    if monitor is None:
        reason = ("drift monitoring is off (AESERVE_DRIFT_WINDOW_ROWS=0)" if settings_off else
                  "its card has no drift reference (schema version 1): retrain it to monitor "
                  "drift")
        raise DriftUnavailable(f"model {entry.name!r} version {entry.version} has no drift "
                               f"window: {reason}", model=entry.name, version=entry.version)
    return {"model": entry.name, "version": entry.version, **monitor.report()}


@router.get("/models/{name}/drift", summary="Drift of the active version's recent rows")
async def get_drift(name: str, repository: Repo) -> dict[str, Any]:
    return _drift(resolve(repository, name, None), repository.settings.drift_window_rows == 0)


@router.get("/models/{name}/versions/{version}/drift", summary="Drift of one version's recent rows")
async def get_version_drift(name: str, version: str, repository: Repo) -> dict[str, Any]:
    return _drift(resolve(repository, name, version), repository.settings.drift_window_rows == 0)


@router.get("/models/{name}/shadow", summary="How the shadow version's verdicts compare with "
            "the active version's")
async def get_shadow(name: str, request: Request, repository: Repo) -> dict[str, Any]:
    model = repository.models.get(name)
    if model is None:
        raise UnknownModel(f"unknown model {name!r}", model=name,
                           available=sorted(repository.models))
    setting, active = model.shadow_setting, model.active
    if setting is None:
        raise NoShadow(f"model {name!r} has no shadow version: name one in its config.json, "
                       '{"shadow": {"version": N, "fraction": F}}', model=name)
    if active is None:
        raise NoShadow(f"model {name!r} has no active version to compare its shadow with",
                       model=name)
    entry = model.versions.get(setting.version)
    counts, skipped = request.app.metrics.shadow_counts(name, active.version, setting.version)
    return shadow_report(name, active.version, setting.version, setting.fraction,
                         entry.state if entry is not None else "failed", counts, skipped)
