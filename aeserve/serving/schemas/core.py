"""Request and response shapes, for the OpenAPI document and for clients.

The routes do not validate bodies with these models (a pydantic walk per float is exactly the cost
`aeserve.serving.codecs` avoids); they describe what the codecs accept and what the routes return.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from aeserve.serving.codecs import id_problem

Id = StrictStr | StrictInt


class InstancesRequest(BaseModel):
    instances: list[list[float]] | list[dict[str, float]] = Field(
        description="Rows of raw features: lists in the model's feature order, or objects "
                    "keyed by feature name (any order).",
        examples=[[[0.1, 2.3, 4.5]]])
    ids: list[Id] | None = Field(
        None, description="One id per row (string or integer, at most 256 characters), echoed "
                          "in the answer and written to the prediction log, for feedback.")


class ModelRef(BaseModel):
    model: str
    version: int
    ids: list[Id] | None = Field(None, description="The request's ids, when it sent any.")


class EncodeResponse(ModelRef):
    embeddings: list[list[float]]


class ReconstructResponse(ModelRef):
    reconstructions: list[list[float]] = Field(description="In the raw feature space.")


class AnomalyScoreResponse(ModelRef):
    scores: list[float] = Field(description="The model's score (its card's score.kind).")
    threshold: float
    is_anomaly: list[bool] = Field(description="score > threshold")
    percentiles: list[float] = Field(
        description="Percentile of each score among held-out normal training scores (0-100).")
    p_values: list[float] = Field(
        description="Share of normal rows expected to score at least as high: 1 - percentile "
                    "/ 100 up to the 99th percentile, an exponential tail fitted to the 95th-99th "
                    "beyond, so scores above every held-out one still rank.")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Id] = Field(min_length=1, description="Ids that earlier requests sent.")
    labels: list[Literal[0, 1]] = Field(
        description="One per id: 1 when the row was an anomaly, 0 when it was not.")

    @model_validator(mode="after")
    def one_label_per_id(self) -> FeedbackRequest:
        if len(self.labels) != len(self.ids):
            raise ValueError(f"{len(self.labels)} labels for {len(self.ids)} ids: send one "
                             "label per id")
        for i, value in enumerate(self.ids):
            problem = id_problem(value)
            if problem is not None:
                raise ValueError(f"id {i} {problem}")
        return self


class FeedbackResponse(BaseModel):
    model: str
    received: int = Field(description="Labels received (all stored).")
    matched: int = Field(description="Labels joined to a logged prediction, and counted.")
    unmatched: int = Field(description="Labels whose id has no logged prediction yet.")
    unmatched_ids: list[str] = Field(description="The first 100 of those ids.")
    outcomes: dict[str, int] = Field(
        description="Matched labels by outcome against the verdict served: true_positive, "
                    "false_positive, true_negative, false_negative.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. wrong_width.")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class SeriesReadings(BaseModel):
    series: Id = Field(description="The series' name (a machine, a sensor, a host): its "
                                   "readings and alarm are kept between requests.")
    rows: list[list[float]] | list[dict[str, float]] = Field(
        description="Readings of the model's features (a windowed model's window.features), "
                    "oldest first.")


class StreamRequest(BaseModel):
    """One series (`series` and `rows`) or several (`streams`)."""

    series: Id | None = None
    rows: list[list[float]] | list[dict[str, float]] | None = None
    streams: list[SeriesReadings] | None = None
    explain: bool = Field(False, description="Add each scored reading's per-feature errors "
                                             "(summed over its window's steps) and top features.")


class SeriesAnswer(BaseModel):
    series: Id
    scores: list[float | None] = Field(description="Each reading's score: that of the window "
                                                   "ending at it; null until the series has "
                                                   "a full window.")
    is_anomaly: list[bool | None] = Field(description="score > threshold (null without a score)")
    smoothed: list[float | None] = Field(description="The score smoothed by the alarm policy.")
    alarm: list[bool] = Field(description="Whether the series is in alarm after each reading.")
    events: list[Literal["start", "end"] | None] = Field(
        description="start or end where this reading changed the alarm.")
    explanations: list[dict | None] | None = None


class StreamResponse(BaseModel):
    model: str
    version: int
    threshold: float
    window: int = Field(description="Readings per window (1: a row model).")
    series: list[SeriesAnswer]
