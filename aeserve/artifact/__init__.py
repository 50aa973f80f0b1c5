"""The model artifact: the one contract between training, serving and batch scoring.

- `card`: the model card's schema (`model.json`), what the graph takes and returns.
- `scores`: what a score means: the verdict against a threshold (the only `score > threshold`),
  the percentile among normal scores, the per-feature explanation.
- `store`: the model store, `models/<name>/<version>/`: list, validate, load, stage, publish.
- `session`: the onnxruntime session of one version, configured by a `SessionConfig`.
- `errors`: what can be wrong with a version; no HTTP status.

It imports nothing else of aeserve (pyproject.toml, import-linter contracts).
"""
