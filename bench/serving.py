"""Serving throughput and latency of aeserve against baselines, side by side in one run.

On one model (64 features, a 64-32-8 encoder and its mirror) and one machine, loopback only:
  (a) aeserve (`aeserve serve`, default settings, one worker);
  (b) the framework ceiling: a FastAPI endpoint that reads the body and returns a constant;
  (c) the straightforward service: FastAPI + pydantic `list[list[float]]` + onnxruntime;
  (d) onnxruntime in process, no HTTP;
  (e) aeserve with drift monitoring off (AESERVE_DRIFT_WINDOW_ROWS=0), for the cost of (a)'s
      drift windows (serving/drift.py);
  (f) aeserve with a shadow version (a copy of the model) scoring every request again
      (`{"shadow": {"version": 2, "fraction": 1.0}}`, serving/shadow.py): the worst case of
      shadowing, against (a);
  (g) aeserve with the prediction log on (AESERVE_PREDICTION_LOG, serving/prediction_log.py):
      every scored row written to Parquet, against (a).
Load comes from wrk (Debian package `wrk`) in a separate process. Reports req/s, rows/s and p50/p99
latency for 1-row requests at concurrency 1 and 32, and 4,096-row requests in JSON and in raw
float32; the resident memory of the aeserve worker. Writes bench/results/serving.md.

    python bench/serving.py [--duration 8] [--rounds 3] [--out bench/results/serving.md]
        [--default-model]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import orjson

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 64
BIG = 4096


@dataclass
class Result:
    target: str
    case: str
    rows_per_request: int
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float

    @property
    def rows_per_s(self) -> float:
        return self.requests_per_s * self.rows_per_request


def train_model(models_dir: Path, defaults: bool = False) -> Path:
    """The benchmark's model on 64 features: one 64-32-8 encoder and its mirror, or with
    `defaults` whatever `aeserve train` trains by default (training/defaults.py)."""
    from aeserve.training.data import Dataset
    from aeserve.training.pipeline import TrainOptions, train_and_export
    from aeserve.training.trainer import TrainConfig

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 8)) @ rng.normal(size=(8, WIDTH)) + 0.1 * rng.normal(
        size=(4000, WIDTH))
    data = Dataset(X=X, y=None, feature_names=[f"f{i}" for i in range(WIDTH)], source="bench")
    if defaults:
        options = TrainOptions(name="bench", models_dir=models_dir, command="bench/serving.py",
                               train=TrainConfig(progress=False))
    else:
        options = TrainOptions(
            name="bench", models_dir=models_dir, hidden_sizes=[32, 8],
            command="bench/serving.py", members=1,  # one 64-32-8 encoder and its mirror
            train=TrainConfig(epochs=20, progress=False))
    outcome = train_and_export(data, options)
    return outcome.path / "model.onnx"


def with_shadow(version: Path, root: Path) -> Path:
    """A repository holding `version` as 1 and a copy as 2, which shadows 1 on every request."""
    import json

    for number in (1, 2):
        target = root / "bench" / str(number)
        shutil.copytree(version, target)
        card = json.loads((target / "model.json").read_text())
        card["version"] = number
        (target / "model.json").write_text(json.dumps(card))
    (root / "bench" / "config.json").write_text(
        json.dumps({"shadow": {"version": 2, "fraction": 1.0}}))
    return root


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [part.replace("{port}", str(self.port)) for part in command], cwd=ROOT,
            env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}/docs", timeout=1)
                break
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise RuntimeError(
                        f"{name} did not start:\n{self.log.read().decode()}") from None
                time.sleep(0.2)

    def pids(self) -> list[int]:
        """The server process and its children (the JSON decoder process, when started)."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:  # the parent pid
                children.append(int(stat.parent.name))
        return [self.process.pid, *children]

    def rss_mb(self) -> float:
        """Resident memory of the worker and its helper processes together."""
        total = 0
        for pid in self.pids():
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
        return total / 1024

    def has_torch(self) -> bool:
        return any("libtorch" in Path(f"/proc/{pid}/maps").read_text() for pid in self.pids())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def uvicorn_command(app: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "{port}",
            "--log-level", "warning", "--no-access-log"]


def wrk(url: str, body_file: Path, content_type: str, concurrency: int, duration: float,
        accept: str = "application/json") -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of POSTing the file's bytes."""
    script = body_file.with_suffix(".lua")
    script.write_text(
        f'local f = io.open("{body_file}", "rb")\n'
        'wrk.body = f:read("*all")\nf:close()\n'
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
        f'wrk.headers["Accept"] = "{accept}"\n')
    output = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "-s",
         str(script),
         url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"errors from {url}:\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return rps, _percentile(output, "50%"), _percentile(output, "99%")


def _percentile(output: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", output).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def in_process(model: Path, rows: np.ndarray, seconds: float) -> float:
    """Rows/s of session.run on the same batch, same thread settings as the server's default."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for _ in range(5):
        session.run(["score"], {"x": rows})
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        session.run(["score"], {"x": rows})
        times.append(time.perf_counter() - started)
    return len(rows) / statistics.median(times)


#: The variants whose cost is measured against aeserve's defaults, and the cases each runs.
VARIANTS = ("aeserve, drift off", "aeserve, shadow on", "aeserve, log on")
PAIRED_CASES = (("1 row, JSON", "one-json", 1, 32, "application/json"),
                (f"{BIG} rows, JSON", "big-json", BIG, 4, "application/json"),
                (f"{BIG} rows, float32 binary", "big-binary", BIG, 4,
                 "application/octet-stream"))


def paired(target: str, variant: str) -> str:
    """The label of a run made back to back with its pair."""
    return f"{target} (paired with {variant})" if target == "aeserve" else target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every case, interleaved; the report quotes medians")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "serving.md")
    parser.add_argument("--default-model", action="store_true",
                        help="serve a model trained with aeserve train's defaults instead")
    parser.add_argument("--no-variants", action="store_true",
                        help="leave out the drift, shadow and log variants (a third of the time)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/serving.py needs wrk: apt-get install wrk (or your system's package)")

    variants = () if args.no_variants else VARIANTS
    work = Path(tempfile.mkdtemp(prefix="aeserve-bench-"))
    model = train_model(work / "models", defaults=args.default_model)
    shadowed = with_shadow(model.parent, work / "models-shadow")
    rng = np.random.default_rng(1)
    one = rng.normal(size=(1, WIDTH)).astype(np.float32)
    big = rng.normal(size=(BIG, WIDTH)).astype(np.float32)
    # Six decimals, as sensors and CSV exports write them: 2.6 MB for 4,096 x 64, the body of
    # the decoding note in the design (full float32 reprs would double it).
    bodies = {
        "one-json": orjson.dumps({"instances": np.round(one.astype(np.float64), 6).tolist()}),
        "big-json": orjson.dumps({"instances": np.round(big.astype(np.float64), 6).tolist()}),
        "big-binary": big.astype("<f4").tobytes(),
    }
    for name, payload in bodies.items():
        (work / f"{name}.body").write_bytes(payload)

    servers = {
        "aeserve": Server("aeserve", [sys.executable, "-m", "aeserve.cli", "serve", "--host",
                                      "127.0.0.1", "--port", "{port}"],
                          {"AESERVE_MODELS_DIR": str(work / "models"),
                           "AESERVE_POLL_INTERVAL_S": "0"}),
        "aeserve, drift off": Server(
            "aeserve, drift off", [sys.executable, "-m", "aeserve.cli", "serve", "--host",
                                   "127.0.0.1", "--port", "{port}"],
            {"AESERVE_MODELS_DIR": str(work / "models"), "AESERVE_POLL_INTERVAL_S": "0",
             "AESERVE_DRIFT_WINDOW_ROWS": "0"}),
        "aeserve, shadow on": Server(
            "aeserve, shadow on", [sys.executable, "-m", "aeserve.cli", "serve", "--host",
                                   "127.0.0.1", "--port", "{port}"],
            {"AESERVE_MODELS_DIR": str(shadowed), "AESERVE_POLL_INTERVAL_S": "0"}),
        "aeserve, log on": Server(
            "aeserve, log on", [sys.executable, "-m", "aeserve.cli", "serve", "--host",
                                "127.0.0.1", "--port", "{port}"],
            {"AESERVE_MODELS_DIR": str(work / "models"), "AESERVE_POLL_INTERVAL_S": "0",
             "AESERVE_PREDICTION_LOG": str(work / "prediction-log")}),
        "ceiling": Server("ceiling", uvicorn_command("bench.baselines.ceiling:app"), {}),
        "straightforward": Server("straightforward",
                                  uvicorn_command("bench.baselines.straightforward:app"),
                                  {"BENCH_MODEL": str(model)}),
    }
    rounds: list[list[Result]] = []
    onnx_rounds: list[float] = []

    def run(target: str, case: str, body: str, rows: int, concurrency: int,
            content_type: str = "application/json", accept: str = "application/json",
            label: str | None = None) -> None:
        url = f"{servers[target].url}/anomaly-score"
        body_file = work / f"{body}.body"
        wrk(url, body_file, content_type, concurrency, min(2.0, args.duration), accept)  # warm
        rps, p50, p99 = wrk(url, body_file, content_type, concurrency, args.duration, accept)
        target = label or target
        rounds[-1].append(Result(target, case, rows, concurrency, rps, p50, p99))
        print(f"{target:16s} {case:24s} c={concurrency:<3d} {rps:10.1f} req/s "
              f"{rps * rows:12.0f} rows/s p50 {p50:8.2f} ms p99 {p99:8.2f} ms", flush=True)

    try:
        # Every case once per round, the rounds one after another: a slow spell of the machine
        # then hits one round of every target rather than every round of one target.
        for number in range(1, args.rounds + 1):
            print(f"round {number} of {args.rounds}", flush=True)
            rounds.append([])
            for target in ("ceiling", "aeserve", "straightforward"):
                for concurrency in (1, 32):
                    run(target, "1 row, JSON", "one-json", 1, concurrency)
            for target in ("aeserve", "straightforward"):
                run(target, f"{BIG} rows, JSON", "big-json", BIG, 4)
            run("aeserve", f"{BIG} rows, float32 binary", "big-binary", BIG, 4,
                "application/octet-stream", "application/octet-stream")
            # Each feature's cost: aeserve and the variant back to back, case by case, in an
            # order that alternates from round to round, so that a slow spell or the position
            # in the round weighs on both sides alike.
            for variant in variants:
                for case, body, rows, concurrency, kind in PAIRED_CASES:
                    order = ("aeserve", variant) if number % 2 else (variant, "aeserve")
                    for target in order:
                        run(target, case, body, rows, concurrency, kind, kind,
                            label=paired(target, variant))
            onnx_rounds.append(in_process(model, big, args.duration))  # servers idle meanwhile
            print(f"onnxruntime in process, {BIG} rows: {onnx_rounds[-1]:,.0f} rows/s")
        rss = servers["aeserve"].rss_mb()
        torch_loaded = servers["aeserve"].has_torch()
    finally:
        for server in servers.values():
            server.stop()
    shutil.rmtree(work, ignore_errors=True)
    model_text = ("64 features, trained with `aeserve train`'s defaults (five members of "
                  "64-32-8 and their mirrors, the residual_cauchy score; `--default-model`)"
                  if args.default_model else "64 features, 64-32-8 encoder and its mirror")
    write_report(args.out, rounds, onnx_rounds, rss, torch_loaded,
                 len(bodies["big-json"]) / 1e6, model_text, variants)


def write_report(out: Path, rounds: list[list[Result]], onnx_rounds: list[float], rss: float,
                 torch_loaded: bool, json_mb: float, model_text: str,
                 variants: tuple[str, ...] = VARIANTS) -> None:
    def get(results: list[Result], target: str, case: str, concurrency: int) -> Result:
        return next(r for r in results if r.target == target and r.case == case
                    and r.concurrency == concurrency)

    def ratios(results: list[Result], onnx_rows: float) -> list[float]:
        ours32 = get(results, "aeserve", "1 row, JSON", 32)
        ceiling32 = get(results, "ceiling", "1 row, JSON", 32)
        return [ours32.requests_per_s / ceiling32.requests_per_s,
                ours32.p99_ms / ceiling32.p99_ms,
                get(results, "aeserve", f"{BIG} rows, JSON", 4).rows_per_s
                / get(results, "straightforward", f"{BIG} rows, JSON", 4).rows_per_s,
                get(results, "aeserve", f"{BIG} rows, float32 binary", 4).rows_per_s / onnx_rows,
                *[(lambda on, off: on.rows_per_s / off.rows_per_s)(
            *(get(results, paired(target, variant), case, c) for target in (
                ("aeserve", variant) if variant.endswith("off") else (variant, "aeserve"))))
          for variant in variants for case, _, _, c, _ in PAIRED_CASES]]

    # Ratios within each round (the targets side by side), then their median over the rounds.
    per_round = [ratios(results, onnx) for results, onnx in zip(rounds, onnx_rounds, strict=True)]
    names = [("1-row req/s at c=32 vs framework ceiling", ">= 0.8"),
             ("1-row p99 at c=32 vs framework ceiling", "<= 1.5"),
             (f"{BIG}-row JSON rows/s vs straightforward service", ">= 10"),
             (f"{BIG}-row binary rows/s vs onnxruntime in process", ">= 0.5"),
             ("1-row req/s at c=32, drift on vs off", ">= 0.95"),
             (f"{BIG}-row JSON rows/s, drift on vs off", ">= 0.95"),
             (f"{BIG}-row binary rows/s, drift on vs off", ">= 0.95"),
             ("1-row req/s at c=32, shadow (every request) vs none", "measured"),
             (f"{BIG}-row JSON rows/s, shadow (every request) vs none", "measured"),
             (f"{BIG}-row binary rows/s, shadow (every request) vs none", "measured"),
             ("1-row req/s at c=32, prediction log on vs off", "measured"),
             (f"{BIG}-row JSON rows/s, prediction log on vs off", "measured"),
             (f"{BIG}-row binary rows/s, prediction log on vs off", "measured")]
    names = names[:4 + len(PAIRED_CASES) * len(variants)]  # the variants are in VARIANTS' order
    checks = [(name, statistics.median(r[i] for r in per_round),
               ", ".join(f"{r[i]:.3f}" for r in per_round), target)
              for i, (name, target) in enumerate(names)]
    medians = [Result(r.target, r.case, r.rows_per_request, r.concurrency,
                      statistics.median(get(results, r.target, r.case, r.concurrency)
                                        .requests_per_s for results in rounds),
                      statistics.median(get(results, r.target, r.case, r.concurrency).p50_ms
                                        for results in rounds),
                      statistics.median(get(results, r.target, r.case, r.concurrency).p99_ms
                                        for results in rounds))
               for r in rounds[0]]
    onnx_rows = statistics.median(onnx_rounds)
    lines = [
        "# Serving benchmark",
        "",
        "One run of `python bench/serving.py` (`make bench-serving`"
        + (", `--default-model`" if "defaults" in model_text else "")
        + f"), {len(rounds)} rounds of "
        "every case, interleaved; figures are medians over the rounds, ratios the median of "
        f"the ratios within each round. {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}, onnxruntime "
        f"{ort.__version__}. Model: {model_text}. Load: wrk, one "
        "thread, on the same machine; every server one process with its default settings. JSON "
        "bodies: `{\"instances\": [[...]]}` with six decimals per value (4,096 rows: "
        f"{json_mb:.1f} MB).",
        "",
        "| target | request | concurrency | req/s | rows/s | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
        *[f"| {r.target} | {r.case} | {r.concurrency} | {r.requests_per_s:,.0f} | "
          f"{r.rows_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |" for r in medians],
        f"| onnxruntime in process | {BIG} rows | 1 | {onnx_rows / BIG:,.1f} | "
        f"{onnx_rows:,.0f} | | |",
        "",
        "| ratio | median | each round | target |",
        "|---|---:|---|---|",
        *[f"| {name} | {value:.3f} | {each} | {target} |"
          for name, value, each, target in checks],
        f"| resident memory of the aeserve worker (with its decoder process) | {rss:.0f} MB | | "
        "< 200 MB |",
        f"| torch loaded in the aeserve worker | {'yes' if torch_loaded else 'no'} | | no |",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
