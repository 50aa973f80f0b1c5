"""The deploy commands that README's "Deploy" section shows and the container test runs.

`{name}`, `{port}` and `{image}` are filled in: the README shows the name `aeserve`, the port
`8000` and the image `aeserve:<version>`; the test uses a unique name and a free local port.
tests/test_manifests.py checks that each command appears in the README as shown there.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = "deploy/docker-compose.yml"

BUILD = "docker build -t {image} ."
RUN = "docker run -d --name {name} -p {port}:8000 {image}"
COMPOSE_UP_SERVER = f"docker compose -f {COMPOSE_FILE} up -d --wait aeserve"
COMPOSE_DOWN = f"docker compose -f {COMPOSE_FILE} down"

README_COMMANDS = (BUILD, RUN, COMPOSE_UP_SERVER, COMPOSE_DOWN)


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["version"]


def image_ref() -> str:
    """The serving image's reference everywhere: `aeserve:<project version>`."""
    return f"aeserve:{project_version()}"


def as_in_readme(command: str) -> str:
    return command.format(name="aeserve", port="8000", image=image_ref())
