"""Managed thresholds: `models/<name>/config.json` may replace a version's threshold, without a
new export, and the server applies it at its next scan.

    {"thresholds": {"*": {"rule": "quantile:0.995"}, "3": {"value": 2.5}}}

A key is a version number, or `*` for every version without its own entry. `value` is a score;
`rule` is `quantile:Q` (0 < Q < 1), read off the version's own card: the score that a share Q of
its held-out normal rows stays below (`aeserve.artifact.scores.score_at_quantile`: the stored
percentiles up to the 99th, the card's exponential tail beyond), so the rule means the same false
alarm rate, 1 - Q, for every version it applies to. The card on disk is never changed: `/models`
shows the threshold in force and where it came from.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from aeserve.artifact.card import ModelCard
from aeserve.artifact.scores import score_at_quantile

#: Where the threshold in force came from.
FROM_CARD = "card"
FROM_CONFIG = "config.json"


class ThresholdSetting(BaseModel):
    """One version's threshold: a score (`value`) or a rule read off its card (`rule`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float | None = None
    rule: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ThresholdSetting:
        if (self.value is None) == (self.rule is None):
            raise ValueError("set exactly one of value and rule")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError("value must be a finite number")
        return self

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, rule: str | None) -> str | None:
        if rule is None:
            return None
        kind, _, level = rule.partition(":")
        try:
            number = float(level)
        except ValueError:
            number = math.nan
        if kind != "quantile" or not 0.0 < number < 1.0:
            raise ValueError(f"rule {rule!r}: use quantile:Q with 0 < Q < 1, e.g. quantile:0.995")
        return rule

    def threshold(self, card: ModelCard) -> float:
        if self.value is not None:
            return self.value
        return score_at_quantile(card.score_quantiles, float(self.rule.partition(":")[2]))

    def describe(self) -> str:
        return self.rule if self.rule is not None else f"value:{self.value!r}"


def check_keys(thresholds: dict[str, ThresholdSetting]) -> dict[str, ThresholdSetting]:
    """Keys are `*` or positive version numbers."""
    bad = [key for key in thresholds
           if key != "*" and not (key.isascii() and key.isdigit() and int(key) >= 1)]
    if bad:
        raise ValueError(f"threshold keys are version numbers or '*', got {bad}")
    return thresholds


def setting_for(thresholds: dict[str, ThresholdSetting], version: int) -> ThresholdSetting | None:
    """The version's own entry, else the `*` entry, else None (the card's threshold)."""
    for key, setting in thresholds.items():
        if key != "*" and int(key) == version:
            return setting
    return thresholds.get("*")


def effective_card(stored: ModelCard, setting: ThresholdSetting | None) -> ModelCard:
    """The card the server serves with: the stored one, or a copy whose threshold and rule are
    the config's."""
    if setting is None:
        return stored
    return stored.model_copy(update={"threshold": setting.threshold(stored),
                                     "threshold_rule": setting.describe()})
