"""The serving image for real: build it, run it, call it over HTTP, then the same through compose.

`make test-container` runs this module (RUN_CONTAINER_TESTS=1); `make test` skips it. Without a
reachable docker daemon it skips and says why, unless REQUIRE_DOCKER=1 (CI, once a daemon is up),
where a missing daemon is a failure. The commands are the README's (tests/container/commands.py).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.container.commands import (
    BUILD,
    COMPOSE_DOWN,
    COMPOSE_FILE,
    COMPOSE_UP_SERVER,
    ROOT,
    RUN,
    image_ref,
)

pytestmark = pytest.mark.skipif(
    os.environ.get("RUN_CONTAINER_TESTS") != "1",
    reason="container tests build and run the image: `make test-container` runs them")

ROWS_FILE = ROOT / "examples" / "breast_cancer_rows.json"
MODEL_DIR = ROOT / "models" / "breast-cancer" / "1"
BASE_IMAGE = "python:3.11-slim"
# What the Dockerfile adds to its base (the virtualenv and the models); README records the size.
MAX_ADDED_MB = 250
MB = 1e6


def sh(command: str, *, check: bool = False, timeout: float = 120,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command from the repository root, as a user would type it."""
    result = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"`{command}` exited {result.returncode}:\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def docker_missing(need_compose: bool = False) -> str | None:
    if shutil.which("docker") is None:
        return "no `docker` command on PATH"
    info = sh("docker info --format '{{.ServerVersion}}'", timeout=30)
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["?"])[-1]
        return f"no docker daemon reachable ({last})"
    if need_compose and sh("docker compose version", timeout=30).returncode != 0:
        return "the docker compose plugin is missing"
    return None


def require_docker(need_compose: bool = False) -> None:
    reason = docker_missing(need_compose)
    if reason is None:
        return
    if os.environ.get("REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason}, and REQUIRE_DOCKER=1 asks for the container tests to run")
    pytest.skip(f"{reason}: start a docker daemon to run the container tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, logs: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"{url}/readyz not ready after {timeout} s ({last}); logs:\n"
                         + sh(logs).stdout[-4000:] + sh(logs).stderr[-4000:])


def expected_scores() -> tuple[np.ndarray, float]:
    """The shipped model's scores for the example rows, from onnxruntime on this machine."""
    rows = np.asarray(json.loads(ROWS_FILE.read_text())["instances"], dtype=np.float32)
    session = ort.InferenceSession(str(MODEL_DIR / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    (scores,) = session.run(["score"], {"x": rows})
    threshold = json.loads((MODEL_DIR / "model.json").read_text())["threshold"]
    return scores, threshold


def samples(metrics_text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def check_endpoints(url: str) -> None:
    """/readyz, /anomaly-score, /encode, /reconstruct and /metrics, as a client sees them."""
    body = ROWS_FILE.read_bytes()
    n_rows = len(json.loads(body)["instances"])
    headers = {"content-type": "application/json"}

    ready = httpx.get(f"{url}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"

    scored = httpx.post(f"{url}/anomaly-score", content=body, headers=headers, timeout=10)
    assert scored.status_code == 200, scored.text
    answer = scored.json()
    scores, threshold = expected_scores()
    assert answer["model"] == "breast-cancer"
    np.testing.assert_allclose(answer["scores"], scores, rtol=1e-5, atol=1e-7)
    assert answer["threshold"] == pytest.approx(threshold)
    assert answer["is_anomaly"] == [bool(s > threshold) for s in scores]
    assert answer["is_anomaly"] == [False, True]  # a benign tumour, then a malignant one

    encoded = httpx.post(f"{url}/encode", content=body, headers=headers, timeout=10)
    assert encoded.status_code == 200, encoded.text
    embeddings = np.asarray(encoded.json()["embeddings"])
    assert embeddings.shape[0] == n_rows and embeddings.shape[1] > 0

    rebuilt = httpx.post(f"{url}/reconstruct", content=body, headers=headers, timeout=10)
    assert rebuilt.status_code == 200, rebuilt.text
    assert np.asarray(rebuilt.json()["reconstructions"]).shape == (n_rows, 30)

    metrics = httpx.get(f"{url}/metrics", timeout=5)
    assert metrics.status_code == 200
    found = samples(metrics.text)
    requests = {(labels["endpoint"], labels["status"]): value
                for labels, value in found["aeserve_requests_total"]}
    for endpoint in ("anomaly-score", "encode", "reconstruct"):
        assert requests.get((endpoint, "200"), 0) >= 1, requests
    assert sum(v for _, v in found["aeserve_scored_rows_total"]) >= n_rows
    assert sum(v for _, v in found["aeserve_anomalies_total"]) >= 1
    at_threshold = [v for labels, v in found["aeserve_score_threshold_ratio_bucket"]
                    if labels["le"] == "1.0" and labels["model"] == "breast-cancer"]
    assert at_threshold and at_threshold[0] >= 1
    assert any(labels["model"] == "breast-cancer" for labels, _ in found["aeserve_model_info"])


def process_uid(container: str) -> int:
    status = sh(f"docker exec {container} cat /proc/1/status", check=True).stdout
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:")))


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def image() -> str:
    require_docker()
    ref = image_ref()
    started = time.monotonic()
    sh(BUILD.format(image=ref), check=True, timeout=1800)
    print(f"\n  {BUILD.format(image=ref)}: {time.monotonic() - started:.0f} s")
    return ref


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"aeserve-test-{uuid.uuid4().hex[:8]}"
    yield name
    sh(f"docker rm -f {name}", timeout=60)


def test_image_contents(image):
    config = json.loads(sh(f"docker image inspect {image}", check=True).stdout)[0]
    user = config["Config"]["User"]
    assert user and user.split(":")[0] not in ("0", "root"), user
    assert "8000/tcp" in config["Config"]["ExposedPorts"]
    assert "/healthz" in " ".join(config["Config"]["Healthcheck"]["Test"])
    assert "AESERVE_MODELS_DIR=/models" in config["Config"]["Env"]

    no_torch = sh(f"docker run --rm --entrypoint python {image} -c 'import torch'")
    assert no_torch.returncode != 0
    assert "No module named 'torch'" in no_torch.stderr
    no_compiler = sh(f"docker run --rm --entrypoint sh {image} "
                     "-c 'command -v gcc cc c++ g++ clang || true'")
    assert no_compiler.stdout.strip() == "", f"a compiler in the image: {no_compiler.stdout}"
    train = sh(f"docker run --rm {image} train --data /nowhere.csv --name x")
    assert train.returncode == 2 and "needs the train extra" in train.stderr
    parts = sh(f"docker run --rm --entrypoint python {image} -c "
               "'import aeserve, os; print(sorted(os.listdir(os.path.dirname(aeserve.__file__))))'",
               check=True)
    assert "serving" in parts.stdout and "artifact" in parts.stdout
    assert "training" not in parts.stdout and "batch" not in parts.stdout, parts.stdout

    size = config["Size"]
    base = sh(f"docker image inspect --format '{{{{.Size}}}}' {BASE_IMAGE}")
    added = size - int(base.stdout) if base.returncode == 0 else size
    print(f"\n  {image}: {size / MB:.0f} MB, of which {added / MB:.0f} MB added to {BASE_IMAGE}")
    assert added < MAX_ADDED_MB * MB


def test_image_serves(image, container_name):
    port = free_port()
    sh(RUN.format(name=container_name, port=f"127.0.0.1:{port}", image=image), check=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, logs=f"docker logs {container_name}")
    check_endpoints(url)

    assert sh(f"docker exec {container_name} id -u", check=True).stdout.strip() != "0"
    assert process_uid(container_name) != 0

    def health() -> str:
        return sh(f"docker inspect --format '{{{{.State.Health.Status}}}}' {container_name}"
                  ).stdout.strip()

    wait_for(lambda: health() == "healthy", 90, "the HEALTHCHECK to pass")
    sh(f"docker stop -t 30 {container_name}", check=True, timeout=60)
    code = sh(f"docker inspect --format '{{{{.State.ExitCode}}}}' {container_name}").stdout
    assert code.strip() == "0", "the server did not exit cleanly on SIGTERM"


def test_sigterm_drains(image, container_name):
    """SIGTERM: /readyz answers 503 for AESERVE_DRAIN_SECONDS while requests still work."""
    port = free_port()
    sh(f"docker run -d --name {container_name} -p 127.0.0.1:{port}:8000 "
       f"-e AESERVE_DRAIN_SECONDS=3 {image}", check=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, logs=f"docker logs {container_name}")
    sh(f"docker kill --signal TERM {container_name}", check=True)
    wait_for(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 503, 2.5,
             "/readyz to answer 503", interval=0.1)
    assert httpx.get(f"{url}/readyz", timeout=2).json()["status"] == "draining"
    scored = httpx.post(f"{url}/anomaly-score", content=ROWS_FILE.read_bytes(),
                        headers={"content-type": "application/json"}, timeout=5)
    assert scored.status_code == 200
    sh(f"docker wait {container_name}", check=True, timeout=30)
    code = sh(f"docker inspect --format '{{{{.State.ExitCode}}}}' {container_name}").stdout
    assert code.strip() == "0"


def publish_version(models: Path, version: int) -> None:
    """What `aeserve train` does: a complete version folder appears with one rename."""
    staging = models.parent / f"staging-{version}"
    shutil.copytree(MODEL_DIR, staging)
    card = json.loads((staging / "model.json").read_text())
    card["version"] = version
    (staging / "model.json").write_text(json.dumps(card))
    staging.rename(models / "breast-cancer" / str(version))


def test_compose_serves_and_picks_up_new_versions(image):
    require_docker(need_compose=True)
    (ROOT / "build").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="container-test-", dir=ROOT / "build"))
    models = work / "models"
    shutil.copytree(ROOT / "models", models)
    for path in (work, *models.rglob("*")):  # the server runs as uid 10001: let it read
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    env = os.environ | {
        "COMPOSE_PROJECT_NAME": f"aeserve-test-{uuid.uuid4().hex[:8]}",
        "AESERVE_HOST_PORT": str(port),
        "AESERVE_MODELS": str(models),
    }
    compose = f"docker compose -f {COMPOSE_FILE}"
    try:
        started = time.monotonic()
        sh(COMPOSE_UP_SERVER, env=env, check=True, timeout=300)
        print(f"\n  {COMPOSE_UP_SERVER}: healthy in {time.monotonic() - started:.0f} s")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, logs=f"{compose} logs aeserve")
        check_endpoints(url)

        assert sh(f"{compose} exec -T aeserve id -u", env=env, check=True).stdout.strip() != "0"
        read_only = sh(f"{compose} exec -T aeserve touch /models/x", env=env)
        assert read_only.returncode != 0, "the models folder is writable inside the container"

        publish_version(models, 2)

        def serving_version() -> int | None:
            return httpx.get(f"{url}/readyz", timeout=2).json()["models"]["breast-cancer"]

        wait_for(lambda: serving_version() == 2, 60, "version 2 to be picked up")
        scored = httpx.post(f"{url}/anomaly-score", content=ROWS_FILE.read_bytes(),
                            headers={"content-type": "application/json"}, timeout=5)
        assert scored.status_code == 200 and scored.json()["version"] == 2
    finally:
        down = sh(COMPOSE_DOWN, env=env, timeout=120)
        left = sh(f"{compose} ps --all --quiet", env=env).stdout.strip()
        shutil.rmtree(work, ignore_errors=True)
    assert down.returncode == 0, down.stderr
    assert left == "", f"containers left behind: {left}"


def test_compose_streams_profile_scores_mqtt_messages():
    """`--profile streams`: Mosquitto and `aeserve stream` built and started by compose; readings
    published from the host come back scored, with the shipped model's scores."""
    require_docker(need_compose=True)
    mqtt = pytest.importorskip("paho.mqtt.client")
    port = free_port()
    env = os.environ | {"COMPOSE_PROJECT_NAME": f"aeserve-streams-{uuid.uuid4().hex[:8]}",
                        "MQTT_PORT": str(port)}
    compose = f"docker compose -f {COMPOSE_FILE} --profile streams"
    rows = json.loads(ROWS_FILE.read_text())["instances"]
    scores, _ = expected_scores()
    answers: list[dict] = []
    try:
        started = time.monotonic()
        sh(f"{compose} up -d --build --wait mosquitto stream", env=env, check=True,
           timeout=1800)
        print(f"\n  {compose} up --wait mosquitto stream: {time.monotonic() - started:.0f} s")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.on_message = lambda c, u, message: answers.append(json.loads(message.payload))
        client.connect("127.0.0.1", port)
        client.subscribe([("scores", 1), ("refused", 1)])
        client.loop_start()

        def answered() -> bool:  # until the runner is subscribed, a reading may go unread
            if not any(a.get("series") == "tumours" for a in answers):
                client.publish("readings", json.dumps(
                    {"series": "tumours", "rows": rows, "id": 1}), qos=1)
            return any(a.get("series") == "tumours" for a in answers)

        wait_for(answered, 60, "the runner's answer", interval=2.0)
        client.publish("readings", json.dumps({"series": "bad", "row": [1.0]}), qos=1)
        wait_for(lambda: any("error" in a for a in answers), 30, "the refusal")
        client.loop_stop()
        client.disconnect()
    finally:
        logs = sh(f"{compose} logs stream", env=env).stdout[-2000:]
        down = sh(f"{compose} down --volumes", env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    answer = next(a for a in answers if a.get("series") == "tumours")
    assert np.allclose(answer["scores"], scores, rtol=1e-5, atol=1e-7), logs
    assert answer["is_anomaly"] == [False, True]
    refused = next(a for a in answers if "error" in a)
    assert refused["error"]["code"] == "wrong_width"
