"""What runs beside the requests: the repository poller and the graceful SIGTERM.

On SIGTERM the app first reports not-ready (`/readyz` 503) for `AESERVE_DRAIN_SECONDS`, so a load
balancer stops sending new traffic, then hands the signal to uvicorn, which closes the listener,
lets in-flight requests finish and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from aeserve.serving.logs import flush_access_log
from aeserve.serving.startup import freeze_startup_objects

if TYPE_CHECKING:
    from aeserve.serving.app import AeserveApp

log = logging.getLogger("aeserve.lifecycle")


async def poll_repository(app: AeserveApp, interval: float) -> None:
    """Rescan the repository every `interval` seconds; a failed scan is logged, never fatal."""
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(app.repository.refresh)
            app.sync_model_metrics()
        except Exception:
            log.exception("repository scan failed; serving what is loaded")


def install_drain_handler(app: AeserveApp, drain_seconds: float) -> Callable[[], None]:
    """Chain a SIGTERM handler in front of the server's; returns a function that removes it.

    Signal handlers belong to the main thread: an app served from another thread (embedded in
    a test or a host program) drains with whatever server runs it, and installs nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if app.draining:
            return
        app.draining = True
        log.info("SIGTERM: not ready; closing in %.1f s after in-flight requests finish",
                 drain_seconds)
        if callable(previous):
            loop.call_soon_threadsafe(loop.call_later, drain_seconds, previous, signum, frame)
        else:
            loop.call_soon_threadsafe(loop.call_later, drain_seconds, default_action)

    def default_action() -> None:
        signal.signal(signal.SIGTERM, previous)
        signal.raise_signal(signal.SIGTERM)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    signal.signal(signal.SIGTERM, on_sigterm)
    return restore


@contextlib.asynccontextmanager
async def lifespan(app: AeserveApp) -> AsyncIterator[None]:
    settings = app.settings
    poller = None
    if settings.poll_interval_s > 0:
        poller = asyncio.create_task(poll_repository(app, settings.poll_interval_s))
    restore = install_drain_handler(app, settings.drain_seconds)
    freeze_startup_objects()
    try:
        yield
    finally:
        restore()
        flush_access_log()
        app.run_executor.shutdown(wait=False)
        app.dataplane.decoder.shutdown()
        if app.dataplane.prediction_log is not None:  # what still waits reaches the disk
            app.dataplane.prediction_log.close()
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
