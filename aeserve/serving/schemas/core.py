"""Request and response shapes, for the OpenAPI document and for clients.

The routes do not validate bodies with these models (a pydantic walk per float is exactly the cost
`aeserve.serving.codecs` avoids); they describe what the codecs accept and what the routes return.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class InstancesRequest(BaseModel):
    instances: list[list[float]] | list[dict[str, float]] = Field(
        description="Rows of raw features: lists in the model's feature order, or objects "
                    "keyed by feature name (any order).",
        examples=[[[0.1, 2.3, 4.5]]])


class ModelRef(BaseModel):
    model: str
    version: int


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


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. wrong_width.")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
