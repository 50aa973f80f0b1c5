"""What the client returns: plain dataclasses holding numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FeatureContribution:
    """One of a row's features that most raised its score."""

    feature: str
    error: float  # the feature's term of the score
    share: float  # its share of the row's score, 0 to 1


@dataclass(frozen=True)
class Explanation:
    """Why one row scored as it did: every feature's term of the score (the score is their
    mean), and the `top_k` features with the largest terms."""

    feature_errors: np.ndarray  # float32 [d], in the model's feature order
    top_features: list[FeatureContribution]


@dataclass(frozen=True)
class AnomalyScores:
    """One answer of `/anomaly-score`: per row, the score, the verdict and the percentile, and
    with `explain=True` the explanation."""

    model: str
    version: int
    threshold: float  # the model's, or the one the request asked for
    scores: np.ndarray  # float32 [N]
    is_anomaly: np.ndarray  # bool [N], score > threshold
    percentiles: np.ndarray  # float64 [N], 0 to 100 among held-out normal scores
    explanations: list[Explanation] | None = None  # one per row when asked for
    #: float64 [N]: the share of normal rows expected to score as high; keeps ranking where the
    #: percentiles read 100 (None from a server that does not send them)
    p_values: np.ndarray | None = None
    #: the ids the call sent, echoed by the server (None when it sent none)
    ids: list | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def anomalies(self) -> np.ndarray:
        """Indices of the rows above the threshold."""
        return np.flatnonzero(self.is_anomaly)

    def to_pandas(self, index: Any = None):
        """A DataFrame with columns score, is_anomaly, percentile and p_value (needs pandas)."""
        import pandas as pd

        columns = {"score": self.scores, "is_anomaly": self.is_anomaly,
                   "percentile": self.percentiles}
        if self.p_values is not None:
            columns["p_value"] = self.p_values
        return pd.DataFrame(columns, index=index)


@dataclass(frozen=True)
class FeedbackResult:
    """One answer of `feedback`: how many labels found their logged prediction, and the
    outcomes of those (the label against the verdict served)."""

    model: str
    received: int
    matched: int
    unmatched: int
    unmatched_ids: list[str]  # the first 100
    outcomes: dict[str, int]  # true_positive, false_positive, true_negative, false_negative


@dataclass(frozen=True)
class Embeddings:
    """One answer of `/encode`: the innermost hidden layer of each row."""

    model: str
    version: int
    embeddings: np.ndarray  # float32 [N, k]

    def __len__(self) -> int:
        return len(self.embeddings)


@dataclass(frozen=True)
class Reconstructions:
    """One answer of `/reconstruct`: each row rebuilt by the model, in raw feature units."""

    model: str
    version: int
    reconstructions: np.ndarray  # float32 [N, d]

    def __len__(self) -> int:
        return len(self.reconstructions)


@dataclass(frozen=True)
class VersionInfo:
    version: int
    state: str  # "ready", "failed" or "unloaded"
    error: str | None
    providers: list[str]


@dataclass(frozen=True)
class ModelSummary:
    """One model of `GET /models`."""

    name: str
    default: bool
    active_version: int | None
    version_policy: str
    error: str | None
    versions: list[VersionInfo]


@dataclass(frozen=True)
class ModelInfo(ModelSummary):
    """`GET /models/{name}`: the summary, the active version's providers and its model card."""

    providers: list[str] = field(default_factory=list)
    card: dict[str, Any] | None = None

    @property
    def feature_names(self) -> list[str]:
        return list(self.card["feature_names"]) if self.card else []

    @property
    def threshold(self) -> float | None:
        return self.card["threshold"] if self.card else None


def model_summary(payload: dict[str, Any]) -> dict[str, Any]:
    return {"name": payload["name"], "default": payload["default"],
            "active_version": payload["active_version"],
            "version_policy": payload["version_policy"], "error": payload["error"],
            "versions": [VersionInfo(v["version"], v["state"], v["error"], v["providers"])
                         for v in payload["versions"]]}


def explanation(payload: dict[str, Any]) -> Explanation:
    return Explanation(np.asarray(payload["feature_errors"], dtype=np.float32),
                       [FeatureContribution(t["feature"], float(t["error"]), float(t["share"]))
                        for t in payload["top_features"]])


@dataclass(frozen=True)
class SeriesScores:
    """One series' readings of a `stream` call: each reading's score (that of the window ending
    at it; NaN before the series' first full window), verdict (None without a score), smoothed
    score, whether the series is in alarm after it, and "start" or "end" where the alarm
    changed."""

    series: str | int
    scores: np.ndarray  # float64 [n]
    is_anomaly: list[bool | None]
    smoothed: np.ndarray  # float64 [n]
    alarm: np.ndarray  # bool [n]
    events: list[str | None]
    explanations: list[dict | None] | None = None

    @property
    def alarm_started(self) -> bool:
        return "start" in self.events


@dataclass(frozen=True)
class StreamResult:
    """One answer of `stream`: every series sent, in order."""

    model: str
    version: int
    threshold: float
    window: int  # readings per window (1: a row model)
    series: list[SeriesScores]

    def __getitem__(self, series: str | int) -> SeriesScores:
        for part in self.series:
            if part.series == series:
                return part
        raise KeyError(series)
