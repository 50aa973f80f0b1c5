"""Serving side of aeserve: FastAPI + onnxruntime. Never imports torch."""

__version__ = "0.1.0"
