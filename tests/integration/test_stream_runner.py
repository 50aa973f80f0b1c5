"""`aeserve stream` against a real Mosquitto broker: answers equal the batch scores of the same
windows, refused messages are answered on their own topic, and a broker restart is survived."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from aeserve.artifact.windows import flatten, series_order, window_rows
from tests import brokers
from tests.helpers import ROOT, free_port
from tests.integration.test_streams import readings

mqtt = pytest.importorskip("paho.mqtt.client")


class Listener:
    """A test client: publishes readings, collects the runner's answers by topic."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.answers: dict[str, list[dict]] = {t: [] for t in topics}
        self.changed = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-listener",
                                  clean_session=False)
        self.connected = threading.Event()
        self.client.on_connect = lambda c, *_: ([c.subscribe(t, qos=1) for t in topics],
                                                self.connected.set())
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.changed:
            self.answers[message.topic].append(json.loads(message.payload))
            self.changed.notify_all()

    def publish(self, payload: dict | bytes) -> None:
        assert self.connected.wait(30), "the test client did not connect"
        raw = payload if isinstance(payload, bytes) else json.dumps(payload)
        self.client.publish("readings", raw, qos=1).wait_for_publish(10)

    def wait(self, condition, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition(self.answers):
                left = deadline - time.monotonic()
                assert left > 0, f"no such answers within {timeout} s: {self.answers}"
                self.changed.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def answered(series: str, count: int):
    return lambda answers: sum(1 for a in answers["scores"] if a.get("series") == series) >= count


@pytest.fixture
def broker(tmp_path):
    with brokers.running("mosquitto", free_port(), tmp_path / "mosquitto") as port:
        yield port, tmp_path / "mosquitto"


@pytest.fixture
def runner(broker, windowed_model, tmp_path):
    port, _ = broker
    _, version = windowed_model
    url = f"mqtt://127.0.0.1:{port}"
    log = tmp_path / "runner.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "aeserve.cli", "stream", "--model", str(version.parent),
             "--source", f"{url}/readings", "--sink", f"{url}/scores", "--errors",
             f"{url}/refused", "--progress-s", "1"], cwd=ROOT, stdout=output,
            stderr=subprocess.STDOUT)
    listener = Listener(port, ["scores", "refused"])
    try:
        # probes until the runner is subscribed (those before are not delivered to it)
        while not listener.answers["scores"]:
            assert process.poll() is None, log.read_text()
            listener.publish({"series": "probe", "row": [0.0, 1.0]})
            time.sleep(0.2)
        yield listener, process, log
    finally:
        listener.close()
        process.terminate()
        process.wait(timeout=20)


def test_the_runner_answers_every_message_with_the_batch_scores(runner, windowed_model):
    listener, _, _ = runner
    data, version = windowed_model
    X, _ = readings(data)["m1"]
    expected = ort.InferenceSession(str(version / "model.onnx"),
                                    providers=["CPUExecutionProvider"]).run(
        ["score"], {"x": flatten(X, window_rows(*series_order(None, None, len(X)), 6))})[0]
    sent, chunk = 0, 1
    while sent < len(X):
        listener.publish({"series": "m1", "rows": X[sent:sent + chunk].tolist(), "id": sent})
        sent, chunk = sent + chunk, chunk % 7 + 1
    listener.publish({"series": "m1", "rows": [[1.0, "x"]]})
    listener.publish({"series": "m1", "row": [1.0]})
    listener.publish(b"not json")
    listener.wait(lambda a: len(a["refused"]) >= 3)
    m1 = [a for a in listener.answers["scores"] if a["series"] == "m1"]
    scores = [s for a in sorted(m1, key=lambda a: a["id"]) for s in a["scores"]]
    assert scores[:5] == [None] * 5
    assert np.array_equal(np.array(scores[5:], dtype=np.float32), expected)
    codes = [a["error"]["code"] for a in listener.answers["refused"]]
    assert codes == ["non_numeric", "wrong_width", "malformed_json"]
    assert listener.answers["refused"][0]["message"].startswith('{"series": "m1"')


def test_the_runner_survives_a_broker_restart(broker, runner):
    port, folder = broker
    listener, process, log = runner
    brokers.stop("mosquitto", folder)
    time.sleep(1.0)
    brokers.start("mosquitto", port, folder)
    deadline = time.monotonic() + 60
    while not answered("after-restart", 1)(listener.answers):
        assert time.monotonic() < deadline, Path(log).read_text()
        listener.publish({"series": "after-restart", "rows": [[0.0, 1.0]] * 8})
        time.sleep(0.5)
    answer = next(a for a in listener.answers["scores"] if a["series"] == "after-restart")
    assert answer["scores"][:5] == [None] * 5 and all(s is not None for s in answer["scores"][5:])
    assert process.poll() is None
    assert "reconnecting" in Path(log).read_text()
