"""Running the app under uvicorn: `aeserve serve` calls `run`."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from types import FrameType

import uvicorn

from aeserve.serving.metrics import MULTIPROCESS_ENV
from aeserve.serving.protocol import ServerProtocol
from aeserve.serving.settings import Settings

APP_FACTORY = "aeserve.serving.app:create_app"


def run(host: str, port: int, models_dir: str | None = None) -> int:
    """Serve the model repository until SIGTERM or Ctrl-C; every AESERVE_* variable applies."""
    if models_dir is not None:  # the workers read their settings from the environment
        os.environ["AESERVE_MODELS_DIR"] = models_dir
    settings = Settings()
    problem = (startup_problem(settings.models_dir, host, port)
               or prediction_log_problem(settings.prediction_log))
    if problem is not None:
        print(f"aeserve serve: {problem}", file=sys.stderr)
        return 2
    if not any(entry.is_dir() and not entry.name.startswith(".")
               for entry in settings.models_dir.iterdir()):
        print(f"aeserve serve: warning: {settings.models_dir} holds no model yet; the server "
              "starts, and is ready once a version is published there", file=sys.stderr)
    if settings.workers > 1:
        prepare_multiprocess_metrics()
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler it
    # found at start: with the default one the process would die of it (exit 143) after a clean
    # shutdown. This one makes a SIGTERM that ends the server, or comes before it starts, exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port,
                workers=settings.workers, log_level=settings.log_level.lower(),
                access_log=False, timeout_graceful_shutdown=None,
                # Connections only: requests in progress are limited by RequestMiddleware, so
                # that sockets still sending their heads never refuse prompt clients.
                limit_concurrency=settings.max_connections,
                # uvicorn's httptools protocol with a deadline on request heads (slow clients)
                # and a shutdown that answers requests already sent (serving/protocol.py).
                http=ServerProtocol,
                # Neither is used (no client address is logged, no version is advertised), and
                # both cost time on every request.
                proxy_headers=False, server_header=False)
    return 0


def prediction_log_problem(directory: Path | None) -> str | None:
    """Why AESERVE_PREDICTION_LOG cannot be written, found before any worker starts: pyarrow
    not installed (the `log` extra), or a folder that cannot be made or written to."""
    if directory is None:
        return None
    if importlib.util.find_spec("pyarrow") is None:
        return ("AESERVE_PREDICTION_LOG needs pyarrow, which is not installed: pip install "
                "'aeserve[log]' (in the image: --build-arg EXTRAS=serve,log)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return (f"cannot create the prediction log folder {directory}: "
                f"{error.strerror or error}")
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"the prediction log folder {directory} is not writable"
    return None


def startup_problem(models_dir: Path, host: str, port: int) -> str | None:
    """What would stop the server, found before any model loads: a models folder that is not
    there (a mistyped path would otherwise start a server that is never ready), or an address
    already in use (otherwise found only after every model has loaded)."""
    if not models_dir.is_dir():
        return (f"the models folder {models_dir} does not exist (set --models-dir or "
                "AESERVE_MODELS_DIR)")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as error:
        return f"cannot listen on {host}:{port}: {error.strerror or error}"
    return None


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
