"""aeserve: autoencoders for anomaly detection, trained with PyTorch, exported to ONNX, served
with FastAPI and onnxruntime.

The package is split by the import rules in pyproject.toml (import-linter):
`aeserve.artifact` is the contract that every other part imports; `serving`, `training` and
`batch` never import one another; `client` imports nothing of aeserve; only `aeserve.cli`
knows every part. This module imports nothing, so `import aeserve` costs nothing.
"""

__version__ = "0.1.0"
