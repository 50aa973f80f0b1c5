"""`aeserve serve` says at once what would stop it, before any model loads: a models folder that
is not there, or an address in use; an empty folder starts with a warning."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from tests.helpers import ROOT, free_port, server_process


def serve(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aeserve.cli", "serve", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_a_missing_models_folder_is_one_clear_line_and_exit_2(tmp_path):
    missing = tmp_path / "modles"
    result = serve("--models-dir", str(missing), "--port", str(free_port()))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"aeserve serve: the models folder {missing} does not exist (set "
                     "--models-dir or AESERVE_MODELS_DIR)"]


def test_a_port_in_use_is_found_before_any_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = serve("--models-dir", str(ROOT / "models"), "--port", str(port))
        assert result.returncode == 2 and time.monotonic() - started < 20
    assert result.stderr.strip().startswith(f"aeserve serve: cannot listen on 127.0.0.1:{port}")
    assert "ready on" not in result.stderr + result.stdout  # no model was loaded


def test_an_empty_folder_starts_with_a_warning(tmp_path):
    with server_process(tmp_path) as server:
        time.sleep(0.2)
        assert any("holds no model yet" in line for line in server.log_lines())


def test_a_prediction_log_that_cannot_be_written_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = serve("--models-dir", str(ROOT / "models"), "--port", str(free_port()),
                   AESERVE_PREDICTION_LOG=str(blocker / "log"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        f"aeserve serve: cannot create the prediction log folder {blocker / 'log'}")


def test_a_prediction_log_without_pyarrow_names_the_extra(monkeypatch, tmp_path):
    import importlib.util

    from aeserve.serving import server

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))
    problem = server.prediction_log_problem(tmp_path / "log")
    assert problem is not None and "pip install 'aeserve[log]'" in problem
    assert server.prediction_log_problem(None) is None
