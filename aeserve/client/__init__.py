"""A Python client for aeserve: `Client` (blocking) and `AsyncClient` (asyncio).

Needs httpx and numpy only (`pip install 'aeserve[client]'`); pandas DataFrames are accepted when
pandas is installed, and never imported otherwise. No torch, no server code.

    from aeserve.client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as aeserve:
        result = aeserve.anomaly_score(frame, model="breast-cancer")
        flagged = result.anomalies  # row indices above the model's threshold
"""

from aeserve.client.aio import AsyncClient
from aeserve.client.errors import (
    AeserveError,
    APIError,
    BadRequest,
    ConnectionFailed,
    Forbidden,
    InvalidInstances,
    ModelNotReady,
    NotFound,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
    UnknownModel,
    UnknownVersion,
    UnsupportedMediaType,
)
from aeserve.client.results import (
    AnomalyScores,
    Embeddings,
    Explanation,
    FeatureContribution,
    FeedbackResult,
    ModelInfo,
    ModelSummary,
    Reconstructions,
    SeriesScores,
    StreamResult,
    VersionInfo,
)
from aeserve.client.sync import Client

__all__ = [
    "APIError", "AeserveError", "AnomalyScores", "AsyncClient", "BadRequest", "Client",
    "ConnectionFailed", "Embeddings", "Explanation", "FeatureContribution", "FeedbackResult",
    "Forbidden",
    "InvalidInstances", "ModelInfo",
    "ModelNotReady", "ModelSummary", "NotFound", "PayloadTooLarge", "Reconstructions",
    "SeriesScores", "ServerError", "StreamResult", "Unauthorized", "UnknownModel",
    "UnknownVersion", "UnsupportedMediaType",
    "VersionInfo",
]
