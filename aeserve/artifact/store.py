"""The model store: `<root>/<name>/<version>/{model.onnx, model.json}` on disk.

The one implementation of the repository layout that every part uses: training publishes into it,
the server and the batch scorer list and load from it.

Loading validates before anything runs on a version: the card against the schema and against its
folder, the sha256 of model.onnx against the card, the graph's inputs and outputs, and one test
inference (`ModelSession`). Publishing is atomic: a version is written into a hidden staging folder
beside the versions (same filesystem) and renamed into place, so a reader never sees half a model;
two writers never claim the same number.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from aeserve.artifact.card import (
    CARD_FILENAME,
    MODEL_NAME_PATTERN,
    ONNX_FILENAME,
    ModelCard,
)
from aeserve.artifact.errors import ModelLoadError, PublishError, schema_problems
from aeserve.artifact.onnx_refs import MalformedGraph, external_data_locations
from aeserve.artifact.session import DEFAULT_SESSION, ModelSession, SessionConfig

Fingerprint = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class LoadedVersion:
    """A validated model version with its onnxruntime session, ready to run."""

    name: str
    version: int
    path: Path
    card: ModelCard
    session: ModelSession
    fingerprint: Fingerprint


def is_model_name(name: str) -> bool:
    """Model names are path components: letters, digits, '.', '_', '-', not starting with '.'."""
    return MODEL_NAME_PATTERN.match(name) is not None


def version_number(name: str) -> int | None:
    """The version a folder name stands for ('1', '2', ...), or None: ASCII digits only (a
    Unicode digit such as '²' passes `str.isdigit` but is no version), no leading zero."""
    if name.isascii() and name.isdigit() and not name.startswith("0"):
        return int(name)
    return None


def version_folders(model_dir: Path) -> dict[int, Path]:
    """Integer-named folders (1, 2, ...); staging folders and stray files are ignored."""
    found = {}
    for child in model_dir.iterdir():
        number = version_number(child.name)
        if number is not None and child.is_dir():
            found[number] = child
    return found


def fingerprint(path: Path) -> Fingerprint:
    """Size and modification time of the two files: cheap to read on every poll."""
    stats = []
    for filename in (CARD_FILENAME, ONNX_FILENAME):
        try:
            stat = (path / filename).stat()
            stats.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            stats.append((-1, -1))
    return tuple(stats)


def read_card(path: Path) -> ModelCard:
    """The card of the version folder `path`, or a `ModelLoadError` naming what is wrong."""
    card_path = path / CARD_FILENAME
    if not card_path.is_file():
        raise ModelLoadError(f"{CARD_FILENAME} is missing")
    try:
        return ModelCard.read(card_path)
    except ValidationError as exc:
        raise ModelLoadError(f"{CARD_FILENAME} does not match the schema: "
                             f"{schema_problems(exc.errors(), 'card', limit=5)}") from None


def load_version(name: str, version: int, path: Path,
                 config: SessionConfig = DEFAULT_SESSION,
                 root: Path | None = None) -> LoadedVersion:
    """Validate and load one version folder; raises `ModelLoadError` saying why it cannot run.

    `root`, the model repository, when the folder was found in one: the folder must lie inside
    it, symbolic links included.
    """
    stamp = fingerprint(path)
    check_contained(path, root)
    card = read_card(path)
    if card.name != name or card.version != version:
        raise ModelLoadError(f"card says {card.name}/{card.version}, folder is {name}/{version}")
    onnx_path = path / ONNX_FILENAME
    if not onnx_path.is_file():
        raise ModelLoadError(f"{ONNX_FILENAME} is missing")
    graph = onnx_path.read_bytes()
    digest = hashlib.sha256(graph).hexdigest()
    if digest != card.onnx_sha256:
        raise ModelLoadError(f"sha256 of {ONNX_FILENAME} is {digest[:12]}..., the card says "
                             f"{card.onnx_sha256[:12]}...")
    external = check_external_data(path, graph, card)
    # From the bytes just checked: nothing on disk is read again, so a file swapped or rewritten
    # after the check (or later, while serving) never reaches the session.
    session = ModelSession(onnx_path, card, config, graph=graph, external_data=external)
    return LoadedVersion(name, version, path, card, session, stamp)


def check_contained(path: Path, root: Path | None) -> None:
    """The version folder (inside `root`) and its card and graph must not lead elsewhere through
    symbolic links: whoever can write the repository cannot make the server read other files."""
    real = path.resolve()
    if root is not None and not real.is_relative_to(root.resolve()):
        raise ModelLoadError("the version folder is a link to a place outside the repository")
    for filename in (CARD_FILENAME, ONNX_FILENAME):
        target = path / filename
        if target.is_symlink() and not target.resolve().is_relative_to(real):
            raise ModelLoadError(f"{filename} is a link to a file outside its version folder")


def check_external_data(path: Path, graph: bytes, card: ModelCard) -> dict[str, bytes]:
    """Every external-data file of the graph lies inside the version folder and matches the
    sha256 the card records for it: the checksum covers all the weights, not only model.onnx.
    Their contents as checked, by location (read once, so what was checked is what loads)."""
    try:
        locations = external_data_locations(graph)
    except MalformedGraph as exc:
        raise ModelLoadError(f"{ONNX_FILENAME} is not a readable ONNX graph: {exc}") from None
    real = path.resolve()
    external: dict[str, bytes] = {}
    for location in dict.fromkeys(locations):
        target = (real / location).resolve() if location else real
        if (not location or Path(location).is_absolute()
                or not target.is_relative_to(real) or target == real):
            raise ModelLoadError(f"the graph reads external data at {location!r}, outside its "
                                 "version folder")
        expected = card.external_data_sha256.get(location)
        if expected is None:
            raise ModelLoadError(f"the graph reads external data {location!r}, which the card's "
                                 "external_data_sha256 does not cover")
        contents = target.read_bytes() if target.is_file() else None
        if contents is None or hashlib.sha256(contents).hexdigest() != expected:
            raise ModelLoadError(f"external data {location!r} is missing or its sha256 is not "
                                 "the card's")
        external[location] = contents
    return external


# -- publishing ---------------------------------------------------------------------------------

def next_version(model_dir: Path) -> int:
    return max(version_folders(model_dir), default=0) + 1


def staging_dir(model_dir: Path) -> Path:
    """A hidden temporary folder beside the versions (same filesystem, so rename is atomic)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the published version is not
    return staging


def publish(staging: Path, model_dir: Path,
            card_for_version: Callable[[int], ModelCard]) -> ModelCard:
    """Write the card and rename the staging folder to the next free version, atomically.

    `card_for_version(v)` builds the card once the version number is known; if another writer
    takes that number first, the rename fails and the next number is tried.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        version = next_version(model_dir)
        card = card_for_version(version)
        (staging / CARD_FILENAME).write_text(card.to_json())
        target = model_dir / str(version)
        try:
            os.rename(staging, target)
        except OSError:
            if target.exists():
                continue
            raise
        return card
    raise PublishError(f"could not claim a version folder under {model_dir}")


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
