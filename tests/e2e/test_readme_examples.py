"""README.md, run: every example outside the Deploy section (which the container tests run and
tests/unit/deploy/test_manifests.py checks) is executed as shown, and its output compared with the
one printed under it.

The examples run in a scratch folder laid out like a checkout after `make example-data`:
`examples/` and `models/` are the repository's, `build/breast_cancer.csv` is written there, and
`.venv/bin/aeserve` is this interpreter's `aeserve`. The `curl` examples go to a server on the
shipped models; `make models` is run from its Makefile recipe and must rebuild the shipped model
exactly, as the README says it does.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import (
    FENCE,
    ROOT,
    SHIPPED_MODEL,
    doc_blocks,
    examples_in,
    far_rows,
    manifold_data,
    running_server,
)

README = ROOT / "README.md"
DEPLOY = "## Deploy"
#: What the card of a rebuilt model may differ in from the shipped one: when and how fast.
VARYING_CARD_FIELDS = {("created_at",), ("training", "fit_s"), ("training", "duration_s"),
                       ("training", "rows_per_s"), ("training", "peak_rss_mb")}


def examples() -> list[tuple[str, str, str | None]]:
    """README's examples outside the Deploy section."""
    text = README.read_text()
    deploy = text.index(DEPLOY)
    end = text.index("\n## ", deploy + len(DEPLOY))
    return examples_in(FENCE.findall(text[:deploy] + text[end:]))


def adapt(code: str, url: str | None = None) -> str:
    code = (code.replace(".venv/bin/python", sys.executable)
            .replace(".venv/bin/aeserve", f"{sys.executable} -m aeserve.cli"))
    return code.replace("localhost:8000", url.removeprefix("http://")) if url else code


def run(code: str, cwd: Path) -> str:
    done = subprocess.run(["bash", "-c", "set -eo pipefail\n" + code], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{code}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def write_example_data(folder: Path) -> None:
    """`make example-data`, into `folder`."""
    subprocess.run([sys.executable, "-m", "aeserve.training.examples.breast_cancer",
                    "--out", str(folder / "build" / "breast_cancer.csv")], check=True)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A folder laid out like a checkout after `make example-data`."""
    folder = tmp_path_factory.mktemp("checkout")
    (folder / "examples").symlink_to(ROOT / "examples")
    (folder / "models").symlink_to(ROOT / "models")
    write_example_data(folder)
    return folder


def test_every_example_outside_deploy_is_run_here():
    kinds = []
    for _, code, _ in examples():
        if "curl " in code:
            kinds.append("served")
        elif code.lstrip().startswith(".venv/bin/aeserve "):
            kinds.append(code.split()[1])  # train, evaluate, score
        elif all(line.startswith("make ") for line in code.strip().splitlines()):
            kinds.append("make")  # the quick start: what CI and the landing check run
        else:
            kinds.append(f"not run: {code!r}")
    assert [k for k in kinds if k.startswith("not run")] == []
    assert kinds.count("served") == 13
    assert sorted(k for k in kinds if k not in ("served", "make")) == [
        "evaluate", "evaluate", "score", "train"]


def test_served_examples_print_what_the_readme_shows(checkout):
    """Against a server with the prediction log the README starts it with; then the log's
    evaluation, from the labels the examples sent."""
    served = [(code, shown) for _, code, shown in examples() if "curl " in code]
    log_dir = checkout / "build" / "prediction-log"
    with running_server(ROOT / "models", AESERVE_PREDICTION_LOG=str(log_dir)) as url:
        for code, shown in served:
            assert shown is not None, code
            assert run(adapt(code, url), checkout).strip() == shown.strip(), code
    ((code, shown),) = [(c, s) for _, c, s in examples() if "--from-log" in c]
    assert run(adapt(code), checkout).strip() == shown.strip()


def test_evaluate_example_prints_what_the_readme_shows(checkout):
    ((code, shown),) = [(c, s) for _, c, s in examples()
                        if "aeserve evaluate" in c and "--from-log" not in c]
    assert json.loads(run(adapt(code), checkout)) == json.loads(shown)
    assert (checkout / "build" / "report" / "index.html").is_file()


def test_score_example_prints_what_the_readme_shows(checkout):
    ((code, shown),) = [(c, s) for _, c, s in examples() if "aeserve score" in c]
    timing = re.compile(r"in [\d.]+ s \([\d,]+ rows/s\)")
    printed = run(adapt(code), checkout)
    assert timing.sub("in T", printed).strip() == timing.sub("in T", shown).strip()


def test_train_example_trains_a_labelled_csv(tmp_path):
    ((code, _),) = [(c, s) for _, c, s in examples() if "aeserve train" in c]
    normal = manifold_data(300, 6)
    rows = np.vstack([normal, far_rows(normal, 10)])
    labels = np.r_[np.zeros(300), np.ones(10)].astype(int)
    header = ",".join([f"sensor_{i}" for i in range(6)] + ["is_anomaly"])
    lines = [header] + [",".join([*map(repr, row.tolist()), str(y)])
             for row, y in zip(rows, labels, strict=True)]
    (tmp_path / "readings.csv").write_text("\n".join(lines) + "\n")
    printed = run(adapt(code).strip() + " --quiet", tmp_path)
    assert printed.startswith("model pumps version 1 written to models/pumps/1\n")
    card = json.loads((tmp_path / "models" / "pumps" / "1" / "model.json").read_text())
    assert card["feature_names"] == [f"sensor_{i}" for i in range(6)]
    assert card["training"]["label_column"] == "is_anomaly"
    assert card["evaluation"]["rows_anomalous"] == 10 and card["evaluation"]["roc_auc"] > 0.95


def models_recipe() -> str:
    """The `aeserve train` command of the Makefile's `models` target, continuation lines joined."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = makefile[makefile.index("\nmodels:"):].split("\n\n")[0]
    (command,) = [line.strip() for line in recipe.splitlines()
                  if line.strip().startswith("$(VENV)/bin/aeserve train")]
    return command.replace("$(VENV)/bin/aeserve", f"{sys.executable} -m aeserve.cli")


def without(card: dict, paths: set[tuple[str, ...]]) -> dict:
    card = json.loads(json.dumps(card))
    for path in paths:
        *parents, leaf = path
        node = card
        for key in parents:
            node = node[key]
        del node[leaf]
    return card


def test_make_models_rebuilds_the_shipped_model(tmp_path):
    write_example_data(tmp_path)
    printed = run(models_recipe(), tmp_path)
    (shown,) = [body for language, body in doc_blocks(README, "## Train a model")
                if language == "" and body.startswith("model breast-cancer version 1")]
    # The parity error is torch against onnxruntime: the README's is the shipped model's.
    assert printed == shown
    rebuilt = tmp_path / "models" / "breast-cancer" / "1"
    ours, shipped = (json.loads((folder / "model.json").read_text())
                     for folder in (rebuilt, SHIPPED_MODEL))
    assert without(ours, VARYING_CARD_FIELDS) == without(shipped, VARYING_CARD_FIELDS)
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the shipped model's bytes are those of torch's x86-64 CPU kernels")
    for name in ("model.onnx", "history.json"):
        assert (rebuilt / name).read_bytes() == (SHIPPED_MODEL / name).read_bytes(), name
