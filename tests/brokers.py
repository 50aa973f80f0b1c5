"""Real brokers for the stream runner's tests, started and stopped by deploy/brokers/broker.sh:
a test skips only with the reason that script gives for not starting one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import ROOT

SCRIPT = ROOT / "deploy" / "brokers" / "broker.sh"
#: The script's exit status when it cannot start a broker here (and says why).
CANNOT_START = 3


def start(broker: str, port: int, folder: Path) -> None:
    """Start `broker` on 127.0.0.1:`port`, its files in `folder`; skip the test where the script
    says it cannot."""
    done = subprocess.run(["bash", str(SCRIPT), "start", broker, str(port), str(folder)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode == CANNOT_START:
        pytest.skip(f"{broker} could not start: {done.stdout.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr


def stop(broker: str, folder: Path) -> None:
    subprocess.run(["bash", str(SCRIPT), "stop", broker, str(folder)], capture_output=True,
                   timeout=60, check=True)


@contextmanager
def running(broker: str, port: int, folder: Path) -> Iterator[int]:
    start(broker, port, folder)
    try:
        yield port
    finally:
        stop(broker, folder)
