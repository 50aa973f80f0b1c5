"""What a training run costs the machine: its peak resident memory.

Read from the kernel's own high-water mark (`getrusage`), so it includes torch's and onnxruntime's
native allocations and needs no sampling thread.
"""

from __future__ import annotations

import resource
import sys


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
