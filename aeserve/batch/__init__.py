"""Batch scoring of files, in process, with no server: `aeserve score`.

- `aeserve.batch.model`: the model version to score with, and `BatchScorer`, which turns one
  Arrow batch of input rows into one Arrow table of results. Both engines call it, so they
  answer alike.
- `aeserve.batch.files`: chunked readers (CSV, Parquet files or folders) and streaming writers.
- `aeserve.batch.local`: the local engine, one process with bounded memory.
- `aeserve.batch.ray_engine`: the same scoring on Ray Data, one onnxruntime session per actor.
- `aeserve.batch.cli`: the command line.

Needs the `batch` extra (pyarrow, tqdm); `--engine ray` needs the `ray` extra. No torch.
"""
