"""Errors of the artifact layer. They say what is wrong with a model version and carry no HTTP
status: the server, the batch scorer and training each turn them into their own answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class ArtifactError(RuntimeError):
    """Base of every error raised by `aeserve.artifact`."""


class ModelLoadError(ArtifactError):
    """A model version cannot be used (card, checksum, graph contract, test run); the message
    says why."""


class ProviderUnavailable(ModelLoadError):
    """The CUDA provider was required, but it is not active in the session."""


class PublishError(ArtifactError):
    """A new version could not be written into the model store."""


def schema_problems(errors: Iterable[Mapping[str, Any]], whole: str = "",
                    limit: int | None = None) -> str:
    """pydantic's validation errors as one line: "where: what; ...". Every part that reads a
    schema (the card, a model's config.json, a request) reports its problems in this form.

    `whole` names the document when an error concerns all of it (an empty location); `limit`
    keeps the line short when a document is wrong in many places.
    """
    problems = [f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in errors]
    return "; ".join(problems[:limit])
