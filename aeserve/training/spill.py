"""Data larger than memory: the float32 matrix in a file on disk, mapped, instead of in RAM.

`aeserve train --spill` (automatic when the float32 data would take more than half the machine's
memory) writes the rows, a Parquet batch at a time, to `rows.f32` in a scratch folder and maps it
read-only: every step of training then reads it exactly as it reads an array in memory (by row
number and in chunks, training/pipeline.py), and the trainer shuffles it a block of rows at a time
(`SHUFFLE_BLOCK_ROWS`) so that reads stay sequential. Pages of the file that were read are
handed back to the kernel after each block and each chunked pass (`release`), so the process's
resident memory stays bounded whatever the file's size; the kernel's page cache keeps what it has
room for.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

#: Rows per shuffle block of a spilled data set: 2**20 rows (128 MiB at 32 features) are read
#: sequentially and shuffled among themselves; blocks come in a seeded random order. Data in
#: memory is shuffled whole.
SHUFFLE_BLOCK_ROWS = 1 << 20
SPILL_FILENAME = "rows.f32"


def physical_memory_bytes() -> int | None:
    """The machine's memory, where the platform says it (None elsewhere)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def should_spill(mode: str, rows: int, features: int) -> bool:
    """`always`, `never`, or `auto`: spill when the float32 data exceeds half the memory."""
    if mode in ("always", "never"):
        return mode == "always"
    memory = physical_memory_bytes()
    return memory is not None and rows * features * 4 > memory // 2


def create(folder: Path, rows: int, features: int) -> np.memmap:
    """A writable float32 [rows, features] matrix backed by a file in `folder`."""
    return np.memmap(folder / SPILL_FILENAME, dtype=np.float32, mode="w+",
                     shape=(rows, features))


def reopen(matrix: np.memmap) -> np.memmap:
    """The filled matrix, flushed and mapped again read-only."""
    matrix.flush()
    path, shape = Path(matrix.filename), matrix.shape
    release(matrix)
    del matrix
    return np.memmap(path, dtype=np.float32, mode="r", shape=shape)


def release(matrix: np.ndarray) -> None:
    """Hand the pages of a mapped matrix back to the kernel (a no-op for an array in memory).
    They are clean, so the next read of them comes from the page cache or the file."""
    mapping = getattr(matrix, "_mmap", None)
    if isinstance(mapping, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
