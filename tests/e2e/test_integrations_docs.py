"""docs/integrations.md, run: the worked example's code blocks on the real data (one epoch
instead of five, in a temporary folder, against a server on a free port), and the alert rules'
promtool commands, and the Python client's tour against a server. Outputs that do not depend on
training are compared with the document's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, SHIPPED_MODEL, add_version, doc_examples, running_server

DOC = ROOT / "docs" / "integrations.md"
DATA = "../shared/data/adbench/16_http.npz"


def runs(section: str) -> list[tuple[str, str, str | None]]:
    """(language, code, documented output or None) for each example of the section."""
    return doc_examples(DOC, section)


def run(language: str, code: str) -> subprocess.CompletedProcess:
    command = ([sys.executable, "-c", code] if language == "python"
               else ["bash", "-c", "set -eo pipefail\n" + code])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{code}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def test_worked_example_runs_as_documented(tmp_path):
    data = (ROOT / DATA).resolve()
    if not data.is_file():
        pytest.skip(f"the worked example's data is not here: {data}")
    steps = runs("## Worked example")
    assert len(steps) == 10
    work = tmp_path / "http"

    def adapt(code: str, url: str | None = None) -> str:
        code = (code.replace(DATA, str(data)).replace("build/http", str(work))
                .replace("--epochs 5", "--epochs 1 --min-steps 0")
                .replace(".venv/bin/python", sys.executable)
                .replace(".venv/bin/aeserve", f"{sys.executable} -m aeserve.cli"))
        if url:
            code = code.replace("http://127.0.0.1:8000", url).replace(
                "localhost:8000", url.removeprefix("http://"))
        return code

    outputs = []
    server = None
    try:
        for language, code, documented in steps:
            if "aeserve serve" in code:  # the server runs in the background for the next steps
                server = running_server(work / "models", AESERVE_POLL_INTERVAL_S="0")
                url = server.__enter__()
                code = "\n".join(line for line in code.splitlines() if "aeserve serve" not in line)
            if code.strip() == "kill %1":
                continue
            done = run(language, adapt(code, url if server else None))
            outputs.append((code, done.stdout, documented))
    finally:
        if server is not None:
            server.__exit__(None, None, None)

    by_step = dict(enumerate(outputs, start=1))
    # 1: the split does not depend on training
    assert by_step[1][1] == by_step[1][2]
    assert by_step[2][1].startswith("model http version 1 written to ")
    # 3: batch scoring of the new half, then the verdicts against the labels
    assert "scored 283,749 rows in " in by_step[3][1]
    assert re.search(r"anomalies: [\d,]+ \([\d.]+ %\) above threshold", by_step[3][1])
    assert (work / "scores.parquet").is_file()
    recall = float(re.search(r"recall ([\d.]+)", by_step[4][1]).group(1))
    assert "2,210 attacks" in by_step[4][1] and recall >= 0.9
    # 4: the server is ready with the new model
    assert by_step[5][1].strip() == by_step[5][2].strip()
    # 5: the client flags the six attack rows of the window and not the six before them
    lines = by_step[6][1].splitlines()
    assert lines[0].startswith("http version 1, threshold ")
    verdicts = {int(line.split()[0]): line.split()[2] for line in lines[3:]}
    assert verdicts == {c: "True" if c >= 311_452 else "False" for c in range(311_446, 311_458)}
    # 6: the stream scorer prints the eight attacks among the last twelve lines of the log
    assert (work / "connections.jsonl").read_text().count("\n") == 20
    printed = [json.loads(line) for line in by_step[8][1].splitlines()]
    assert [p["connection"] for p in printed] == list(range(311_452, 311_460))
    assert all(p["is_anomaly"] and p["model"] == "http" for p in printed)
    # 7: the counters: 12 + 12 rows scored, at least the 6 + 8 attacks counted
    counters = dict(line.rsplit(" ", 1) for line in by_step[9][1].splitlines())
    assert float(counters['aeserve_scored_rows_total{model="http",version="1"}']) == 24.0
    assert float(counters['aeserve_anomalies_total{model="http",version="1"}']) >= 14.0
    assert by_step[9][1].splitlines()[1] == by_step[9][2].splitlines()[1]


def test_alert_rules_pass_their_promtool_checks():
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    ((language, code, documented),) = [step for step in runs("## Alerting")
                                       if "promtool" in step[1]]
    done = run(language, code)
    assert done.stdout.split() == documented.split()


def test_client_tour_runs_against_a_server(tmp_path):
    """The Python client section's block, against a server whose only model is `pumps` (the
    shipped model published as version 3), with the `rows` and `frame` it leaves to the reader."""
    ((language, code, _),) = runs("## The Python client")
    add_version(tmp_path, SHIPPED_MODEL, "pumps", 3)
    features = json.loads((SHIPPED_MODEL / "model.json").read_text())["feature_names"]
    prelude = (
        "import json\nimport pandas as pd\n"
        f"instances = json.load(open({str(ROOT / 'examples' / 'breast_cancer_rows.json')!r}))"
        "['instances']\n"
        f"frame = pd.DataFrame(instances, columns={features!r}, index=['benign', 'malignant'])\n"
        "rows = frame.to_numpy()\n")
    checks = (
        "\nassert list(result.anomalies) == [1] and result.version == 3\n"
        "assert len(explained.explanations[0].top_features) == 2\n"
        "print(result.to_pandas(index=frame.index).to_json(orient='index'))\n")
    with running_server(tmp_path) as url:
        done = run(language, prelude + code.replace("http://127.0.0.1:8000", url) + checks)
    printed = json.loads(done.stdout)
    assert printed["benign"]["is_anomaly"] is False and printed["malignant"]["is_anomaly"] is True
    assert printed["malignant"]["p_value"] < 1e-6 < printed["benign"]["p_value"]
