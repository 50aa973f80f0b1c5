"""Data larger than memory: the float32 matrix in a file on disk, mapped, instead of in RAM.

`aeserve train --spill` (automatic when the float32 data would take more than half the machine's
memory) writes the rows, a Parquet or CSV batch at a time, to `rows.f32` in a scratch folder and
maps it read-only: every step of training then reads it exactly as it reads an array in memory
(by row number and in chunks, training/pipeline.py), and the trainer shuffles it a buffer of
`SHUFFLE_BLOCK_ROWS` rows at a time, made of runs of consecutive rows from random places
(trainer.py, `_block_order`), so that reads stay sequential. Pages of the file that were read are
handed back to the kernel after each block and each chunked pass (`release`), so the process's
resident memory stays bounded whatever the file's size; the kernel's page cache keeps what it has
room for.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

#: Rows per shuffle buffer of a spilled data set: 2**20 rows (128 MiB at 32 features), 64 runs of
#: 16,384 consecutive rows from random places, shuffled among themselves; the runs come in a
#: seeded random order. Data in memory is shuffled whole.
SHUFFLE_BLOCK_ROWS = 1 << 20
SPILL_FILENAME = "rows.f32"


def physical_memory_bytes() -> int | None:
    """The machine's memory, where the platform says it (None elsewhere)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def should_spill(mode: str, data_bytes: int) -> bool:
    """`always`, `never`, or `auto`: spill when the data (its float32 rows; a CSV's size on
    disk, which is larger than its float32 rows) exceeds half the memory."""
    if mode in ("always", "never"):
        return mode == "always"
    memory = physical_memory_bytes()
    return memory is not None and data_bytes > memory // 2


class Appender:
    """Rows written one after the other to a file in `folder`, then mapped read-only: the file
    grows as batches come, so the number of rows need not be known (a CSV's is not)."""

    def __init__(self, folder: Path, features: int) -> None:
        self.path = folder / SPILL_FILENAME
        self.features = features
        self.rows = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed by `matrix`)

    def write(self, rows: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(rows, dtype=np.float32).data)
        self.rows += len(rows)

    def matrix(self) -> np.ndarray:
        """The rows written, as a read-only float32 [rows, features] map of the file."""
        self._file.close()
        if self.rows == 0:
            return np.empty((0, self.features), dtype=np.float32)
        return np.memmap(self.path, dtype=np.float32, mode="r",
                         shape=(self.rows, self.features))


def row_chunks(X: np.ndarray, rows: np.ndarray | None = None, size: int = 65_536):
    """`(start, stop, part)` for the rows of `X`, or for its rows numbered `rows`, `size` at a
    time: `part` holds rows start..stop of them. The pages of a spilled `X` are handed back
    after each chunk, so a pass over it stays in the memory of one chunk."""
    n = len(X) if rows is None else len(rows)
    for start in range(0, n, size):
        stop = min(n, start + size)
        yield start, stop, (X[start:stop] if rows is None else X[rows[start:stop]])
        release(X)


def release(matrix: np.ndarray) -> None:
    """Hand the pages of a mapped matrix back to the kernel (a no-op for an array in memory).
    They are clean, so the next read of them comes from the page cache or the file."""
    mapping = getattr(matrix, "_mmap", None)
    if isinstance(mapping, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
