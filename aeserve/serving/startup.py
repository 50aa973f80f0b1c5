"""Interpreter-wide switches, in one visible place. Each changes the whole worker process, so
`create_app` and the app's lifespan call these and nothing else sets them."""

from __future__ import annotations

import gc
import sys

from aeserve.serving.settings import Settings


def tune_interpreter(settings: Settings) -> None:
    """Before the app is built: Python's thread switch interval (default 5 ms).

    A finished onnxruntime run is handed back to the event loop by a worker thread, which must
    take the GIL from a busy loop: with the default it waits up to 5 ms, longer than a small
    request's whole life. `AESERVE_GIL_SWITCH_INTERVAL_MS` (default 0.2) bounds that wait.
    """
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)


def freeze_startup_objects() -> None:
    """Once the app is built, before the first request: move every object alive now out of the
    garbage collector's sight.

    Everything built at start-up (FastAPI, pydantic, numpy, onnxruntime sessions: hundreds of
    thousands of objects) lives as long as the process. Frozen, the collector stops walking it
    on every full collection, pauses that otherwise show up as the p99 latency.
    """
    gc.collect()
    gc.freeze()
