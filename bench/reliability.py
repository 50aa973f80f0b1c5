"""Reliability under load: a soak, the memory of one 60 MB body, and requests lost on SIGTERM.

Each part starts `aeserve serve` on the shipped model in a subprocess and measures it from outside:

- **soak**: `--soak-s` seconds of mixed traffic from 8 client threads (1-row and 256-row JSON,
  binary float32, named features, explanations, malformed bodies, unknown models): every answer
  must be the expected status (errors are requests answered otherwise, or not at all), and the
  process tree's memory is sampled, so that drift shows;
- **memory**: the process tree's resident memory (server and helpers) before, at peak during, and
  after one 60 MB JSON body of a single long row (refused for its width);
- **shutdown**: 32 client threads send 1-row requests on kept-alive connections; SIGTERM arrives
  after a second; a request is *lost* when it was sent and got neither an answer nor a refused
  connection (a refused connection was never accepted: the client knows it was not served).
  Repeated `--shutdowns` times; the server must also exit 0.

    python -m bench.reliability [--soak-s 60] [--shutdowns 5] [--out bench/results/reliability.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL = "breast-cancer"
ROWS = np.random.default_rng(0).normal(size=(256, 30)) * 5 + 15


@dataclass
class Server:
    process: subprocess.Popen
    url: str

    def tree_rss_mb(self) -> float:
        """Resident memory of the server and every process under it, in MB."""
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0
        for process in processes:
            with suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total / 1e6


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(**env: str) -> Iterator[Server]:
    """`aeserve serve` on the shipped model, until the block ends (SIGTERM, then kill)."""
    port = _free_port()
    environment = {**os.environ, "AESERVE_MODELS_DIR": str(ROOT / "models"),
                   "AESERVE_LOG_LEVEL": "WARNING", **env}
    process = subprocess.Popen([sys.executable, "-m", "aeserve.cli", "serve", "--host",
                                "127.0.0.1", "--port", str(port)], cwd=ROOT, env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    running = Server(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{running.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


# --- soak ------------------------------------------------------------------------------------

def _requests(url: str) -> list[tuple[str, Callable[[httpx.Client], httpx.Response], int]]:
    """(name, request, expected status) of the mixed traffic."""
    one = {"instances": ROWS[:1].tolist()}
    many = {"instances": ROWS.tolist()}
    names = json.loads((ROOT / "models" / MODEL / "1" / "model.json").read_text())["feature_names"]
    named = {"instances": [dict(zip(names, row, strict=True)) for row in ROWS[:8].tolist()]}
    binary = ROWS[:64].astype("<f4").tobytes()
    return [
        ("1 row", lambda c: c.post("/anomaly-score", json=one), 200),
        ("256 rows", lambda c: c.post("/anomaly-score", json=many), 200),
        ("binary 64 rows", lambda c: c.post("/anomaly-score", content=binary, headers={
            "content-type": "application/octet-stream"}), 200),
        ("named features", lambda c: c.post("/anomaly-score", json=named), 200),
        ("explain", lambda c: c.post("/anomaly-score?explain=true", json=many), 200),
        ("reconstruct", lambda c: c.post("/reconstruct", json=one), 200),
        ("wrong width", lambda c: c.post("/anomaly-score", json={"instances": [[1, 2]]}), 422),
        ("bad JSON", lambda c: c.post("/anomaly-score", content=b"{", headers={
            "content-type": "application/json"}), 400),
        ("unknown model", lambda c: c.post("/models/nope/anomaly-score", json=one), 404),
    ]


def soak(seconds: float, threads: int = 8) -> dict:
    with server() as running:
        kinds = _requests(running.url)
        counts: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        memory: list[tuple[float, float]] = []
        stop = threading.Event()
        started = time.monotonic()

        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            with httpx.Client(base_url=running.url, timeout=30) as http:
                while not stop.is_set():
                    name, send, expected = kinds[rng.integers(len(kinds))]
                    try:
                        status = send(http).status_code
                    except httpx.HTTPError as error:
                        status = type(error).__name__
                    counts[name] += 1
                    if status != expected:
                        errors[f"{name}: {status}"] += 1

        workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        while time.monotonic() - started < seconds:
            memory.append((time.monotonic() - started, running.tree_rss_mb()))
            time.sleep(1.0)
        stop.set()
        for worker in workers:
            worker.join()
        elapsed = time.monotonic() - started
    tenth = max(1, len(memory) // 10)
    return {"requests": sum(counts.values()), "seconds": elapsed, "errors": dict(errors),
            "rss_first_mb": float(np.median([m for _, m in memory[:tenth]])),
            "rss_last_mb": float(np.median([m for _, m in memory[-tenth:]])),
            "rss_max_mb": max(m for _, m in memory)}


# --- memory of one 60 MB body ------------------------------------------------------------------

def big_body_memory(values_in_row: int = 6_500_000) -> dict:
    """One JSON row of `values_in_row` numbers written with six decimals: about 60 MB."""
    values = np.random.default_rng(0).normal(size=values_in_row)
    body = b'{"instances": [[' + b",".join(b"%.6f" % v for v in values) + b"]]}"
    with server() as running:
        httpx.post(f"{running.url}/anomaly-score", json={"instances": ROWS[:1].tolist()})
        before = running.tree_rss_mb()
        peak, stop = [before], threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], running.tree_rss_mb())
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        response = httpx.post(f"{running.url}/anomaly-score", content=body, timeout=120,
                              headers={"content-type": "application/json"})
        time.sleep(1.0)
        stop.set()
        watcher.join()
        after = running.tree_rss_mb()
    return {"body_mb": len(body) / 1e6, "status": response.status_code,
            "code": response.json()["error"]["code"], "before_mb": before, "peak_mb": peak[0],
            "after_mb": after}


# --- requests lost on SIGTERM ------------------------------------------------------------------

@dataclass
class ShutdownOutcome:
    answered: int = 0
    refused: int = 0  # connection refused: never accepted, the client knows
    lost: Counter[str] = field(default_factory=Counter)
    exit_code: int | None = None


def shutdown_under_load(concurrency: int = 32, warm_s: float = 1.0) -> ShutdownOutcome:
    outcome = ShutdownOutcome()
    lock = threading.Lock()
    payload = {"instances": ROWS[:1].tolist()}
    with server() as running:
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=running.url, timeout=30) as http:
                while not stop.is_set():
                    try:
                        http.post("/anomaly-score", json=payload)
                        kind = None
                    except httpx.ConnectError:
                        kind = "refused"
                    except httpx.HTTPError as error:
                        kind = type(error).__name__
                    with lock:
                        if kind is None:
                            outcome.answered += 1
                        elif kind == "refused":
                            outcome.refused += 1
                            stop.wait(0.05)
                        else:
                            outcome.lost[kind] += 1

        workers = [threading.Thread(target=client) for _ in range(concurrency)]
        for worker in workers:
            worker.start()
        time.sleep(warm_s)
        running.process.send_signal(signal.SIGTERM)
        outcome.exit_code = running.process.wait(timeout=60)
        time.sleep(0.5)  # the clients see the listener gone
        stop.set()
        for worker in workers:
            worker.join()
    return outcome


def report(soaked: dict, memory: dict, shutdowns: list[ShutdownOutcome], soak_s: float) -> str:
    lost = sum(sum(o.lost.values()) for o in shutdowns)
    kinds = Counter()
    for outcome in shutdowns:
        kinds.update(outcome.lost)
    lines = [
        "# Reliability", "",
        f"`aeserve serve` on the shipped model, measured from outside the process; "
        f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores. "
        "Reproduce: `make bench-reliability` (`python -m bench.reliability`).", "",
        "## Soak", "",
        f"{soak_s:g} s of mixed traffic from 8 client threads (1 and 256 rows, binary, named "
        "features, explanations, reconstructions, and malformed bodies, wrong widths and unknown "
        "models, each expected to get its 4xx).", "",
        "| requests | errors | memory, first tenth (MB) | last tenth (MB) | max (MB) |",
        "|---:|---:|---:|---:|---:|",
        f"| {soaked['requests']:,} | {sum(soaked['errors'].values())} | "
        f"{soaked['rss_first_mb']:.0f} | {soaked['rss_last_mb']:.0f} | "
        f"{soaked['rss_max_mb']:.0f} |", "",
        *([f"Errors: {soaked['errors']}", ""] if soaked["errors"] else []),
        "## One 60 MB body", "",
        f"A {memory['body_mb']:.0f} MB JSON body holding one row of 6.5 million numbers, refused "
        f"with {memory['status']} `{memory['code']}`; resident memory of the server and its "
        "helper processes:", "",
        "| before (MB) | peak (MB) | after (MB) |", "|---:|---:|---:|",
        f"| {memory['before_mb']:.0f} | {memory['peak_mb']:.0f} | {memory['after_mb']:.0f} |", "",
        "## Requests lost on SIGTERM under load", "",
        "32 client threads on kept-alive connections send 1-row requests; SIGTERM after a second. "
        "Lost: sent, and neither answered nor refused at connect.", "",
        "| shutdown | answered | refused at connect | lost | exit code |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {i + 1} | {o.answered:,} | {o.refused} | {sum(o.lost.values())} | {o.exit_code} |"
          for i, o in enumerate(shutdowns)],
        "", f"Lost in all: {lost}" + (f" ({dict(kinds)})" if lost else "") + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak-s", type=float, default=60.0)
    parser.add_argument("--shutdowns", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "reliability.md")
    args = parser.parse_args()
    shutdowns = []
    for i in range(args.shutdowns):
        shutdowns.append(shutdown_under_load())
        print(f"shutdown {i + 1}: {shutdowns[-1]}", flush=True)
    memory = big_body_memory()
    print(f"60 MB body: {memory}", flush=True)
    soaked = soak(args.soak_s)
    print(f"soak: {soaked}", flush=True)
    text = report(soaked, memory, shutdowns, args.soak_s)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
