"""Errors of the artifact layer. They say what is wrong with a model version and carry no HTTP
status: the server, the batch scorer and training each turn them into their own answer."""

from __future__ import annotations


class ArtifactError(RuntimeError):
    """Base of every error raised by `aeserve.artifact`."""


class ModelLoadError(ArtifactError):
    """A model version cannot be used (card, checksum, graph contract, test run); the message
    says why."""


class ProviderUnavailable(ModelLoadError):
    """The CUDA provider was required, but it is not active in the session."""


class PublishError(ArtifactError):
    """A new version could not be written into the model store."""
