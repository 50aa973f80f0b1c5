"""The stream runner's speed: messages per second and end-to-end latency through a real broker,
against scoring the same messages in process.

A windowed model (BasicMotions, `--window 16`, 6 channels: bench/stream_quality.py's task) is
trained once. Then, in one run:

- **in process**: `StreamScorer.score` on one message at a time (the runner's own scoring, no
  broker), over the same messages: messages per second and the per-message time's median and
  p99;
- **flood**: a Mosquitto broker (deploy/brokers/broker.sh) and `aeserve stream` in its own
  process; a client publishes `--messages` messages (one reading each, `--series` series in
  turn, QoS 1) as fast as it can and collects the answers: messages per second from the first
  publish to the last answer;
- **paced**: the same at `--rate` messages per second, well below the flood rate: each answer's
  latency from its message's publication (median, p99).

Every process shares this machine's cores (broker, runner, client), as they would on one host.

    python -m bench.stream_runner [--messages 20000] [--series 100] [--rate 500]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from aeserve.artifact.alarms import AlarmPolicy
from aeserve.batch.model import load_model
from aeserve.batch.mqtt_link import no_delay
from aeserve.batch.stream_scorer import StreamScorer
from bench.stream_quality import basic_motions, train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BROKER = ROOT / "deploy" / "brokers" / "broker.sh"


def messages(count: int, series: int, seed: int = 0) -> list[bytes]:
    """`count` one-reading messages of the task's test readings, `series` series in turn, each
    with its number as id."""
    task = basic_motions()
    X = task.test[task.channels].to_numpy(np.float32)
    rng = np.random.default_rng(seed)
    rows = X[rng.integers(0, len(X), count)]
    return [json.dumps({"series": f"s{i % series}", "row": rows[i].tolist(), "id": i}).encode()
            for i in range(count)]


def in_process(version: Path, payloads: list[bytes]) -> dict:
    scorer = StreamScorer(load_model(version), AlarmPolicy(), max_series=100_000, idle_s=3600.0)
    times = []
    started = time.perf_counter()
    for payload in payloads:
        t0 = time.perf_counter()
        scorer.score([payload])
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    return {"messages_per_s": len(payloads) / total, "median_ms": 1e3 * statistics.median(times),
            "p99_ms": 1e3 * float(np.percentile(times, 99))}


class Client:
    """Publishes messages and records when each answer (by id) arrives."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.arrived: dict[int, float] = {}
        self.done = threading.Event()
        self.expected = 0
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-client")
        self.client.on_connect = lambda c, *_: (c.subscribe("scores", qos=1), self.ready.set())
        self.client.on_message = self._on_message
        self.client.on_socket_open = no_delay
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.ready.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        answer = json.loads(message.payload)
        if "id" in answer:
            self.arrived[answer["id"]] = time.perf_counter()
            if len(self.arrived) >= self.expected:
                self.done.set()

    def send(self, payloads: list[bytes], rate: float | None) -> dict[int, float]:
        """Publish every message (at `rate` per second, or at once); their publication times."""
        self.arrived.clear()
        self.done.clear()
        self.expected = len(payloads)
        sent: dict[int, float] = {}
        started = time.perf_counter()
        for i, payload in enumerate(payloads):
            if rate is not None:
                pause = started + i / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            sent[json.loads(payload)["id"]] = time.perf_counter()
            self.client.publish("readings", payload, qos=1)
        if not self.done.wait(300):
            raise RuntimeError(f"{len(self.arrived)} of {len(payloads)} answers within 300 s")
        return sent


def through_broker(version: Path, flood: list[bytes], paced: list[bytes], rate: float,
                   folder: Path, rounds: int) -> list[dict]:
    from tests.helpers import free_port  # the tests' free-port helper: no fixed port

    port = free_port()
    subprocess.run(["bash", str(BROKER), "start", "mosquitto", str(port), str(folder / "mq")],
                   check=True, stdout=subprocess.DEVNULL)
    url = f"mqtt://127.0.0.1:{port}"
    runner = subprocess.Popen(
        [sys.executable, "-m", "aeserve.cli", "stream", "--model", str(version), "--source",
         f"{url}/readings", "--sink", f"{url}/scores", "--progress-s", "5"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Client(port)
        time.sleep(2.0)  # the runner's subscription (a probe below checks it)
        client.send([json.dumps({"series": "probe", "row": [0.0] * 6, "id": -1}).encode()],
                    None)
        results = []
        for _ in range(rounds):
            sent = client.send(flood, None)
            first, last = min(sent.values()), max(client.arrived.values())
            result = {"flood_messages_per_s": len(flood) / (last - first)}
            sent = client.send(paced, rate)
            latency = [client.arrived[i] - sent[i] for i in sent]
            result.update(paced_rate=rate, median_ms=1e3 * statistics.median(latency),
                          p99_ms=1e3 * float(np.percentile(latency, 99)))
            results.append(result)
        client.client.disconnect()
        client.client.loop_stop()
        return results
    finally:
        runner.terminate()
        runner.wait(timeout=30)
        subprocess.run(["bash", str(BROKER), "stop", "mosquitto", str(folder / "mq")],
                       stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements of each kind; medians are reported")
    parser.add_argument("--out", type=Path, default=RESULTS / "stream_runner.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        version = train(basic_motions(), folder, seed=0, window=16)
        flood = messages(args.messages, args.series)
        paced = messages(min(args.messages, int(args.rate * 10)), args.series, seed=1)
        locals_ = [in_process(version, flood) for _ in range(args.rounds)]
        brokers = through_broker(version, flood, paced, args.rate, folder, args.rounds)
    local = {key: statistics.median(r[key] for r in locals_) for key in locals_[0]}
    broker = {key: statistics.median(r[key] for r in brokers) for key in brokers[0]}
    ratio = statistics.median(b["flood_messages_per_s"] / a["messages_per_s"]
                              for a, b in zip(locals_, brokers, strict=True))
    lines = [
        "# The stream runner's speed", "",
        f"`python -m bench.stream_runner --messages {args.messages} --series {args.series} "
        f"--rate {args.rate:g} --rounds {args.rounds}` ({platform.machine()}, Python "
        f"{platform.python_version()}): a BasicMotions model of windows of 16 readings of 6 "
        "channels; one reading per message. Medians of the rounds (the ratio: of the per-round "
        "ratios). bench/stream_runner.py says what each row measures.", "",
        "| measure | in process | through Mosquitto | ratio |", "|---|---:|---:|---:|",
        f"| messages per second (flood) | {local['messages_per_s']:,.0f} | "
        f"{broker['flood_messages_per_s']:,.0f} | {ratio:.2f}x |",
        f"| latency median, ms (paced, {broker['paced_rate']:g}/s through the broker) | "
        f"{local['median_ms']:.3f} | {broker['median_ms']:.2f} | |",
        f"| latency p99, ms | {local['p99_ms']:.3f} | {broker['p99_ms']:.2f} | |",
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
