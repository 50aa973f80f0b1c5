"""Batch scoring of files, in process, with no server: `aeserve score`.

- `scoring.model`: the model version to score with, and `BatchScorer`, which turns one Arrow batch
  of input rows into one Arrow table of results. Both engines call it, so they answer alike.
- `scoring.files`: chunked readers (CSV, Parquet files or folders) and streaming writers.
- `scoring.local`: the local engine, one process with bounded memory.
- `scoring.ray_engine`: the same scoring on Ray Data, one onnxruntime session per actor.
- `scoring.cli`: the command line.

Needs the `batch` extra (pyarrow, tqdm); `--engine ray` needs the `ray` extra. No torch.
"""
