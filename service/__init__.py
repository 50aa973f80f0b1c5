"""Serving side of aeserve: FastAPI + onnxruntime. Never imports torch."""
