"""The part boundaries are executable: import-linter's contracts (pyproject.toml) hold, and a
forbidden import added to a part breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with pyproject.toml's contracts, on the `aeserve` under `package_parent`."""
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache"], cwd=package_parent, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(package_parent), "PATH": ""})


@pytest.fixture(scope="module")
def contracts_run() -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail("lint-imports is not installed: `make install` installs the dev extra")
    return lint_imports(ROOT)


def test_every_contract_is_kept(contracts_run):
    assert contracts_run.returncode == 0, contracts_run.stdout + contracts_run.stderr
    assert "0 broken" in contracts_run.stdout


@pytest.mark.parametrize(("module", "forbidden", "contract"), [
    ("serving/extra.py", "from aeserve.training import model", "never import one another"),
    ("artifact/extra.py", "from aeserve.serving import errors", "artifact imports nothing"),
    ("client/extra.py", "import onnxruntime", "no server or model libraries"),
    ("batch/extra.py", "import torch", "never import torch"),
    ("training/extra.py", "from aeserve import cli", "Only aeserve.cli"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, forbidden, contract):
    shutil.copytree(ROOT / "aeserve", tmp_path / "aeserve",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "aeserve" / module).write_text(f"{forbidden}\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), done.stdout
