"""Alarms over a series' scores: smoothing, k of the last n, and a quiet interval after each alarm.

A verdict per reading is too noisy to page anyone: a single spike flips it, and a fault that
lasts an hour would raise sixty alarms. So an alarm is a state of a series, computed from its
scores in order (as Merlion's alarm rules and industrial autoencoder servers do it):

1. the score is smoothed (the median of the last readings, or an EWMA), so that one outlier
   reading moves it little;
2. the alarm starts when at least `k` of the last `n` smoothed scores exceed the threshold,
   and ends when fewer do;
3. after an alarm ends, none starts again for `quiet` readings: a fault that flickers around the
   threshold raises one alarm, not many.

The policy lives in a model's config.json (`"alarm": {...}`), so operators tune it without
retraining; `AlarmState.step` is the whole rule, used by the server and the stream runner alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AlarmPolicy(BaseModel):
    """How a series' scores become alarms (module docstring). The defaults: the median of the
    last 3 scores, which a single outlying reading cannot move past the threshold (an EWMA
    carries a large spike into the next readings), and 3 of the last 5 smoothed scores above the
    threshold, so that a fault must last a few readings to page anyone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    smoothing: Literal["none", "ewma", "median"] = "median"
    alpha: float = Field(0.5, gt=0.0, le=1.0,
                         description="ewma: the newest score's weight, s = a x + (1 - a) s'.")
    span: int = Field(3, ge=1, le=1000, description="median: the readings it is taken over.")
    k: int = Field(3, ge=1, description="Smoothed scores above the threshold that start an "
                                         "alarm ...")
    n: int = Field(5, ge=1, le=1000, description="... among the last n.")
    quiet: int = Field(0, ge=0, description="Readings after an alarm ends during which no "
                                            "alarm starts.")

    @model_validator(mode="after")
    def _k_of_n(self) -> AlarmPolicy:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) cannot exceed n ({self.n})")
        return self


Event = Literal["start", "end"] | None


@dataclass(slots=True)
class AlarmState:
    """One series' alarm: what `step` needs of its past readings, and no more (bounded by the
    policy's n and span). Small, since a server keeps one per series: the last n verdicts are
    the bits of one integer, and the median's scores a short list."""

    policy: AlarmPolicy
    smoothed: float | None = None
    #: Bit i: whether the smoothed score i readings ago was above the threshold.
    recent: int = 0
    history: list = field(default_factory=list)
    active: bool = False
    quiet_left: int = 0

    def step(self, score: float, threshold: float) -> tuple[float, bool, Event]:
        """Take the next score of the series: (its smoothed score, whether the series is in
        alarm after it, "start" or "end" when this reading changed that, else None)."""
        policy = self.policy
        smoothed = self._smooth(score)
        self.recent = ((self.recent << 1) | (smoothed > threshold)) & ((1 << policy.n) - 1)
        firing = self.recent.bit_count() >= policy.k
        event: Event = None
        if self.active and not firing:
            self.active, self.quiet_left, event = False, policy.quiet, "end"
        elif not self.active:
            if self.quiet_left > 0:
                self.quiet_left -= 1
            elif firing:
                self.active, event = True, "start"
        return smoothed, self.active, event

    def _smooth(self, score: float) -> float:
        policy = self.policy
        if policy.smoothing == "none":
            return score
        if policy.smoothing == "ewma":
            previous = self.smoothed
            self.smoothed = score if previous is None else (
                policy.alpha * score + (1.0 - policy.alpha) * previous)
            return self.smoothed
        self.history.append(score)
        if len(self.history) > policy.span:
            del self.history[0]
        ordered = sorted(self.history)
        middle = len(ordered) // 2
        return (ordered[middle] if len(ordered) % 2
                else 0.5 * (ordered[middle - 1] + ordered[middle]))

