"""Running the app under uvicorn: `aeserve serve` calls `run`."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from types import FrameType

import uvicorn

from aeserve.serving.metrics import MULTIPROCESS_ENV
from aeserve.serving.protocol import HeadDeadlineProtocol
from aeserve.serving.settings import Settings

APP_FACTORY = "aeserve.serving.app:create_app"


def run(host: str, port: int, models_dir: str | None = None) -> int:
    """Serve the model repository until SIGTERM or Ctrl-C; every AESERVE_* variable applies."""
    if models_dir is not None:  # the workers read their settings from the environment
        os.environ["AESERVE_MODELS_DIR"] = models_dir
    settings = Settings()
    if settings.workers > 1:
        prepare_multiprocess_metrics()
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler it
    # found at start: with the default one the process would die of it (exit 143) after a clean
    # shutdown. This one makes a SIGTERM that ends the server, or comes before it starts, exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port,
                workers=settings.workers, log_level=settings.log_level.lower(),
                access_log=False, timeout_graceful_shutdown=None,
                limit_concurrency=settings.max_concurrency,
                # uvicorn's httptools protocol with a deadline on request heads (slow clients).
                http=HeadDeadlineProtocol,
                # Neither is used (no client address is logged, no version is advertised), and
                # both cost time on every request.
                proxy_headers=False, server_header=False)
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def prepare_multiprocess_metrics() -> None:
    """Give the workers a fresh shared folder for their metrics files (prometheus-client's
    multi-process mode), unless the operator chose one."""
    folder = os.environ.get(MULTIPROCESS_ENV)
    if folder is None:
        folder = tempfile.mkdtemp(prefix="aeserve-metrics-")
        os.environ[MULTIPROCESS_ENV] = folder
    for stale in os.listdir(folder):  # files of a previous run would add to this one's counts
        if stale.endswith(".db"):
            os.remove(os.path.join(folder, stale))
