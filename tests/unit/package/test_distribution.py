"""What `pip install` gets: one top-level package, the licence, and installs that fit each user
(the client pulls no server or model libraries; the server no torch)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.helpers import ROOT

HEAVY = {"fastapi", "starlette", "uvicorn", "onnxruntime", "onnxruntime-gpu", "torch"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (path,) = out.glob("aeserve-*.whl")
    return path


@pytest.fixture(scope="module")
def metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def test_the_wheel_holds_one_top_level_package_and_the_licence(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"aeserve"}
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    for part in ("artifact", "serving", "training", "batch", "client"):
        assert f"aeserve/{part}/__init__.py" in names


def test_the_licence_is_apache_2(metadata):
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def requirements(metadata, extra: str | None, seen: frozenset = frozenset()) -> set[str]:
    """The distributions an install of `aeserve[extra]` asks for, self-references followed."""
    wanted: set[str] = set()
    for line in metadata.get_all("Requires-Dist"):
        requirement, _, marker = line.partition(";")
        in_scope = (not marker.strip() if extra is None
                    else re.search(rf'extra == "{re.escape(extra)}"', marker))
        if not in_scope:
            continue
        name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0).lower()
        if name == "aeserve":  # aeserve[artifact] and the like
            for inner in re.findall(r"\[([^\]]+)\]", requirement)[0].split(","):
                if inner.strip() not in seen:
                    wanted |= requirements(metadata, inner.strip(), seen | {inner.strip()})
        else:
            wanted.add(name)
    return wanted | (requirements(metadata, None) if extra is not None else set())


def test_the_client_install_is_httpx_and_numpy(metadata):
    assert requirements(metadata, "client") == {"httpx", "numpy"}


def test_the_serving_install_has_no_torch(metadata):
    serve = requirements(metadata, "serve")
    assert {"fastapi", "uvicorn", "onnxruntime"} <= serve and "torch" not in serve
    assert "torch" in requirements(metadata, "train")
    assert not HEAVY & requirements(metadata, None)
