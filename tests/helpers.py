"""Shared test helpers: synthetic data, a quick training run, and a real uvicorn server."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


def address(url: str) -> tuple[str, int]:
    """(host, port) of a server's URL, for a raw socket."""
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


@contextmanager
def server_process(models_dir: Path, **env: str) -> Iterator[Server]:
    """Start `aeserve serve` in a subprocess on a free port, output to a log file."""
    port = free_port()
    environment = {**os.environ, "AESERVE_MODELS_DIR": str(models_dir), **env}
    log_dir = Path(tempfile.mkdtemp(prefix="aeserve-log-"))
    log_path = log_dir / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "aeserve.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(log_dir, ignore_errors=True)


def wait_until_healthy(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n"
                               + server.log_path.read_text())
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not answer /healthz within 30 s")
        time.sleep(0.1)


@contextmanager
def running_server(models_dir: Path, **env: str) -> Iterator[str]:
    """Start `aeserve serve` in a subprocess on a free port; yield its base URL."""
    with server_process(models_dir, **env) as server:
        yield server.url


def wait_for(condition, timeout: float = 10.0, interval: float = 0.1):
    """Poll `condition()` until it returns something truthy; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


#: The model shipped in the repository: what serving and artifact unit tests run, with no torch.
SHIPPED_MODEL = ROOT / "models" / "breast-cancer" / "1"


def add_version(root: Path, source: Path, name: str, version: int, tamper: bool = False) -> Path:
    """Copy a published version under a new name/number, editing the card to match."""
    target = root / name / str(version)
    shutil.copytree(source, target)
    card = json.loads((target / "model.json").read_text())
    card["name"], card["version"] = name, version
    (target / "model.json").write_text(json.dumps(card))
    if tamper:
        with open(target / "model.onnx", "ab") as handle:
            handle.write(b"x")
    return target


@contextmanager
def app_on_a_socket(app) -> Iterator[str]:
    """Serve an app built in this process (uvicorn in a thread) on a free port; yields its URL.

    For tests that change the app itself (an added middleware) or want its state in process;
    `running_server` runs `aeserve serve` as a user does.
    """
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from a raw socket: (status, lower-cased headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


#: A fenced block of a Markdown document: its language and its text.
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def doc_blocks(doc: Path, section: str | None = None) -> list[tuple[str, str]]:
    """(language, text) of every fenced block of `doc`, or of its section that starts with the
    heading `section` (up to the next heading of level 2)."""
    text = doc.read_text()
    if section is not None:
        start = text.index(section)
        end = text.find("\n## ", start + len(section))
        text = text[start:end if end != -1 else len(text)]
    return FENCE.findall(text)


def doc_examples(doc: Path, section: str | None = None) -> list[tuple[str, str, str | None]]:
    """(language, code, the output block that follows it or None) for each `sh` or `python`
    block of `doc` (or of its `section`): a document's examples, with what it says they print."""
    return examples_in(doc_blocks(doc, section))


def examples_in(blocks: list[tuple[str, str]]) -> list[tuple[str, str, str | None]]:
    """The examples among fenced `blocks`: each `sh` or `python` block with the block after it
    when that one is not code (its output)."""
    found, pending = [], None
    for language, body in blocks:
        if language in ("sh", "python"):
            if pending:
                found.append((*pending, None))
            pending = (language, body)
        elif pending:
            found.append((*pending, body))
            pending = None
    if pending:
        found.append((*pending, None))
    return found


def machine_readings(path: Path, n_series: int = 3, steps: int = 300, seed: int = 0,
                     stuck: tuple[int, int] = (200, 212)) -> Path:
    """A CSV of readings from `n_series` machines, rows shuffled: columns machine (text), time
    (ISO 8601), a = sin(phase) and b = cos(phase) with noise, and label. On the last machine
    sensor b sticks at its value for the steps `stuck` (labelled 1 after its first two): every
    reading stays within the normal range, only the context (a moving while b does not) is
    wrong, which a window sees and a single row cannot."""
    import csv

    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_series):
        phase = np.arange(steps) / 8.0 + m
        a = np.sin(phase) + 0.03 * rng.normal(size=steps)
        b = np.cos(phase) + 0.03 * rng.normal(size=steps)
        label = np.zeros(steps, dtype=int)
        if m == n_series - 1:
            b[stuck[0]:stuck[1]] = b[stuck[0]]
            label[stuck[0] + 2:stuck[1]] = 1
        for t in range(steps):
            rows.append([f"m{m}", f"2026-01-01T{t // 60:02d}:{t % 60:02d}:00",
                         f"{a[t]:.6f}", f"{b[t]:.6f}", int(label[t])])
    order = rng.permutation(len(rows))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["machine", "time", "a", "b", "label"])
        writer.writerows(rows[i] for i in order)
    return path
