"""docs/streams.md, run: the walk through BasicMotions, every step as the document gives it, in a
temporary folder, the server and the broker on free ports. What does not depend on training is
compared with the document's output; the rest is checked for what the document says of it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests import brokers
from tests.helpers import ROOT, doc_examples, free_port, running_server, wait_for

DOC = ROOT / "docs" / "streams.md"
SECTION = "## A walk through a real data set"


def test_the_walk_through_runs_as_documented(tmp_path):
    pytest.importorskip("sktime", reason="the walk reads BasicMotions from sktime")
    steps = doc_examples(DOC, SECTION)
    assert [language for language, _, _ in steps] == [
        "python", "sh", "sh", "python", "sh", "python", "sh", "sh", "python"]
    aeserve = f"{sys.executable} -m aeserve.cli"

    def run(language: str, code: str) -> str:
        code = re.sub(r"(^|\n|\| )aeserve ", rf"\1{aeserve} ", code)
        command = ([sys.executable, "-c", code] if language == "python"
                   else ["bash", "-c", "set -eo pipefail\n" + code])
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{code}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done.stdout

    (write, written), (train, trained), (score, scored), (roc, measured) = (
        (code, documented) for _, code, documented in steps[:4])
    assert run("python", write) == written
    assert run("sh", train).startswith(trained.splitlines()[0])
    out = run("sh", score)
    assert out.splitlines()[0].startswith("scored 4,000 rows in ")
    assert (tmp_path / "build/motions/scored.csv").read_text().splitlines()[:2] == \
        scored.splitlines()[3:5]
    auc = float(re.search(r"ROC-AUC ([\d.]+)", run("python", roc)).group(1))
    assert measured.startswith("3400 readings scored") and auc >= 0.99

    serve, (_, client_demo, shown), (_, curl, refused) = steps[4], steps[5], steps[6]
    assert "aeserve serve --port 8000" in serve[1]
    with running_server(tmp_path / "models", AESERVE_POLL_INTERVAL_S="0") as url:
        out = run("python", client_demo.replace("http://127.0.0.1:8000", url))
        lines = out.splitlines()
        assert len(lines) == len(shown.splitlines()) == 8
        assert lines[:2] == shown.splitlines()[:2]  # no full window in the first second
        assert "events ['start']" in lines[3] and "alarm True" in lines[7]
        assert not any("watch-1" in line and "alarm True" in line for line in lines)
        assert run("sh", curl.replace("localhost:8000", url.removeprefix("http://"))) == \
            refused.strip()

    (_, start_runner, _), (_, publish, answered) = steps[7], steps[8]
    port = free_port()
    lines = start_runner.replace("1883", str(port)).replace(
        "deploy/brokers/broker.sh", str(ROOT / "deploy/brokers/broker.sh")).splitlines()
    brokers.start("mosquitto", port, tmp_path / "build/mosquitto")
    runner_command = re.sub(r"^aeserve ", f"{aeserve} ",
                            " ".join(line.rstrip("\\").strip() for line in lines[1:]))
    log = tmp_path / "runner.log"
    with open(log, "wb") as output:
        # no shell between: terminating it must stop the runner itself
        runner = subprocess.Popen(shlex.split(runner_command.replace(
            "--metrics-port 9100", f"--metrics-port {free_port()}")), cwd=tmp_path,
            stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "subscribed to" in log.read_text(), timeout=60)
        out = run("python", publish.replace("1883", str(port)))
        assert out.splitlines()[-1] == answered.splitlines()[-1]  # the refused message
        assert re.search(r"watch-2 reading \d+: alarm start", out)
        assert "watch-1" not in out
    finally:
        runner.terminate()
        runner.wait(timeout=30)
        brokers.stop("mosquitto", tmp_path / "build/mosquitto")
