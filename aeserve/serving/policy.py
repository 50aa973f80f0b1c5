"""A model's `config.json`: its version policy (which of its version folders the server loads),
its managed thresholds (aeserve/serving/thresholds.py), its shadow version (serving/shadow.py) and
its alarm policy for streams (`"alarm": {...}`, aeserve/artifact/alarms.py).

The version policy, in Triton's shape:

    {"version_policy": {"latest": {"num_versions": 1}}}     the default
    {"version_policy": {"specific": {"versions": [1, 3]}}}
    {"version_policy": {"all": {}}}

`latest` counts *ready* versions: when the newest version fails validation it is reported as
failed and the next one down is loaded in its place, so a bad export never takes a model offline.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aeserve.artifact.alarms import AlarmPolicy
from aeserve.artifact.errors import schema_problems
from aeserve.serving.thresholds import ThresholdSetting, check_keys

CONFIG_FILENAME = "config.json"


class PolicyError(ValueError):
    """config.json exists but cannot be used; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latest(_Strict):
    num_versions: int = Field(1, ge=1)


class Specific(_Strict):
    versions: list[int] = Field(min_length=1)


class All(_Strict):
    pass


class VersionPolicy(_Strict):
    latest: Latest | None = None
    specific: Specific | None = None
    all: All | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        chosen = [k for k in ("latest", "specific", "all") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"choose one version policy, got {chosen}")
        return self

    def describe(self) -> str:
        if self.specific is not None:
            return f"specific {self.specific.versions}"
        if self.all is not None:
            return "all"
        return f"latest {(self.latest or Latest()).num_versions}"

    def candidates(self, on_disk: list[int]) -> tuple[list[int], int | None]:
        """Versions to try, newest first, and how many ready ones to stop at (None: all)."""
        newest_first = sorted(on_disk, reverse=True)
        if self.specific is not None:
            return sorted(set(self.specific.versions), reverse=True), None
        if self.all is not None:
            return newest_first, None
        return newest_first, (self.latest or Latest()).num_versions


class ShadowSetting(_Strict):
    """A version that scores a share of the model's traffic beside the active one, whose
    answers it never changes: `{"shadow": {"version": 3, "fraction": 0.1}}`. It is loaded
    whatever the version policy says, and it is never the active version."""

    version: int = Field(ge=1)
    fraction: float = Field(gt=0.0, le=1.0)


class ModelConfig(_Strict):
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    thresholds: dict[str, ThresholdSetting] = Field(default_factory=dict)
    shadow: ShadowSetting | None = None
    #: How POST /models/{name}/stream turns each series' scores into alarms
    #: (aeserve/artifact/alarms.py).
    alarm: AlarmPolicy = Field(default_factory=AlarmPolicy)

    @field_validator("thresholds")
    @classmethod
    def _version_keys(cls, thresholds: dict[str, ThresholdSetting]
                      ) -> dict[str, ThresholdSetting]:
        return check_keys(thresholds)


def read_model_config(model_dir: Path) -> ModelConfig:
    path = model_dir / CONFIG_FILENAME
    if not path.is_file():
        return ModelConfig()
    try:
        return ModelConfig.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise PolicyError(f"{CONFIG_FILENAME} is invalid: "
                          f"{schema_problems(exc.errors(), 'config', limit=3)}") from None
