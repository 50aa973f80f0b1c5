"""Installs that fit each user, into empty virtualenvs as a user makes them: the client pulls
httpx and numpy and nothing of the server or torch; the server starts with no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, free_port, wait_for

SERVER_OR_MODEL = {"fastapi", "starlette", "uvicorn", "onnxruntime", "onnxruntime-gpu", "torch",
                   "pydantic", "pyarrow"}


def fresh_install(tmp_path: Path, extra: str) -> Path:
    """A new virtualenv holding `aeserve[extra]` from this checkout; returns its bin folder."""
    venv = tmp_path / f"venv-{extra}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", f"{ROOT}[{extra}]"],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"pip install aeserve[{extra}] failed: {done.stderr[-2000:]}")
    return venv / "bin"


def installed(bin_dir: Path) -> set[str]:
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "list", "--format=freeze",
                           "--disable-pip-version-check"],
                          capture_output=True, text=True, check=True, timeout=120)
    return {line.split("==")[0].lower() for line in done.stdout.split()}


def test_client_only_install(tmp_path):
    bin_dir = fresh_install(tmp_path, "client")
    packages = installed(bin_dir)
    assert {"aeserve", "httpx", "numpy"} <= packages
    assert not SERVER_OR_MODEL & packages, sorted(SERVER_OR_MODEL & packages)
    imported = subprocess.run([str(bin_dir / "python"), "-c", "from aeserve.client import Client"],
                              capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    serve = subprocess.run([str(bin_dir / "aeserve"), "serve"], capture_output=True, text=True,
                           timeout=60)
    assert serve.returncode == 2 and "needs the serve extra" in serve.stderr


def test_serving_install_serves_the_shipped_model_without_torch(tmp_path):
    bin_dir = fresh_install(tmp_path, "serve")
    assert "torch" not in installed(bin_dir)
    port = free_port()
    env = {**os.environ, "AESERVE_LOG_FORMAT": "text", "AESERVE_POLL_INTERVAL_S": "0"}
    process = subprocess.Popen([str(bin_dir / "aeserve"), "serve", "--port", str(port),
                                "--models-dir", str(ROOT / "models")], env=env,
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"aeserve serve exited: {process.stderr.read().decode()[-2000:]}")
            try:
                return httpx.get(f"{url}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=60)
        rows = (ROOT / "examples" / "breast_cancer_rows.json").read_bytes()
        answer = httpx.post(f"{url}/anomaly-score", content=rows,
                            headers={"content-type": "application/json"})
        assert answer.status_code == 200 and answer.json()["model"] == "breast-cancer"
        train = subprocess.run([str(bin_dir / "aeserve"), "train", "--data", "x.csv", "--name",
                                "m"], capture_output=True, text=True, timeout=60)
        assert train.returncode == 2 and "needs the train extra" in train.stderr
    finally:
        process.terminate()
        process.wait(timeout=30)
