"""Shared test helpers: synthetic data, a quick training run, and a real uvicorn server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def manifold_data(n_rows: int = 400, width: int = 6, seed: int = 0) -> np.ndarray:
    """Normal rows near a 2-D linear manifold in `width` dimensions, features on mixed scales."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_rows, 2))
    mixing = rng.normal(size=(2, width))
    scales = np.geomspace(0.5, 200.0, width)
    offsets = np.linspace(-50.0, 300.0, width)
    noise = 0.05 * rng.normal(size=(n_rows, width))
    return (latent @ mixing + noise) * scales + offsets


def far_rows(normal: np.ndarray, n_rows: int = 20, seed: int = 1) -> np.ndarray:
    """Rows well off the manifold: each feature pushed 6 spreads away in a random direction."""
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_rows, normal.shape[1]))
    return normal.mean(axis=0) + 6.0 * normal.std(axis=0) * signs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(models_dir: Path, **env: str) -> Iterator[str]:
    """Start `aeserve serve` in a subprocess on a free port; yield its base URL."""
    port = free_port()
    environment = {**os.environ, "AESERVE_MODELS_DIR": str(models_dir), **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"server exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /healthz within 30 s")
            time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
