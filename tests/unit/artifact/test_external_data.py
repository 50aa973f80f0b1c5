"""A version folder cannot make the server read files it does not own: external data must lie
inside the folder and match the card's checksums; links out of the repository are refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # to write graphs with external data (the train extra)
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from aeserve.artifact import store  # noqa: E402
from aeserve.artifact.card import CARD_FILENAME, ONNX_FILENAME  # noqa: E402
from aeserve.artifact.errors import ModelLoadError  # noqa: E402
from aeserve.artifact.onnx_refs import MalformedGraph, external_data_locations  # noqa: E402
from tests.helpers import SHIPPED_MODEL  # noqa: E402


def graph_with_external_weights(folder: Path, location: str = "weights.bin") -> Path:
    """x @ W with W in a file of its own (and a subgraph attribute, walked too)."""
    weight = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), name="W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None, 2])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [None, 2])], initializer=[weight])
    model = helper.make_model(graph)
    path = folder / ONNX_FILENAME
    onnx.save_model(model, str(path), save_as_external_data=True, location=location,
                    size_threshold=0)
    return path


def point_weights_at(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save_model(model, str(path))


def version_with(tmp_path: Path, external: dict[str, str] | None = None) -> Path:
    """models/m/1 with the shipped card, its graph replaced by one with external weights."""
    folder = tmp_path / "models" / "m" / "1"
    shutil.copytree(SHIPPED_MODEL, folder)
    graph = graph_with_external_weights(folder)
    card = json.loads((folder / CARD_FILENAME).read_text())
    card.update(name="m", version=1, onnx_sha256=hashlib.sha256(graph.read_bytes()).hexdigest(),
                external_data_sha256=external or {})
    (folder / CARD_FILENAME).write_text(json.dumps(card))
    return folder


def test_the_locations_are_read_from_the_protobuf(tmp_path):
    (tmp_path / "w").mkdir()
    path = graph_with_external_weights(tmp_path, "w/weights.bin")
    assert external_data_locations(path.read_bytes()) == ["w/weights.bin"]
    assert external_data_locations((SHIPPED_MODEL / ONNX_FILENAME).read_bytes()) == []
    with pytest.raises(MalformedGraph):
        external_data_locations(b"\x0a\xff\xff\xff\xff\x0f")  # a field longer than the file


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "../2/weights.bin"])
def test_weights_outside_the_version_folder_are_refused(tmp_path, location):
    folder = version_with(tmp_path)
    point_weights_at(folder / ONNX_FILENAME, location)
    card = json.loads((folder / CARD_FILENAME).read_text())
    card["onnx_sha256"] = hashlib.sha256((folder / ONNX_FILENAME).read_bytes()).hexdigest()
    (folder / CARD_FILENAME).write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="outside its version folder"):
        store.load_version("m", 1, folder, root=tmp_path / "models")


def test_weights_inside_must_match_the_cards_checksum(tmp_path):
    folder = version_with(tmp_path)
    with pytest.raises(ModelLoadError, match="does not cover"):
        store.load_version("m", 1, folder)
    digest = hashlib.sha256((folder / "weights.bin").read_bytes()).hexdigest()
    folder = version_with(tmp_path / "again", {"weights.bin": digest})
    graph = (folder / ONNX_FILENAME).read_bytes()
    card = store.read_card(folder)
    store.check_external_data(folder, graph, card)  # covered: passes
    (folder / "weights.bin").write_bytes(b"\0" * 16)  # edited after publication
    with pytest.raises(ModelLoadError, match="sha256 is not the card's"):
        store.check_external_data(folder, graph, card)


def test_links_out_of_the_repository_are_refused(tmp_path):
    outside = tmp_path / "elsewhere" / "1"
    shutil.copytree(SHIPPED_MODEL, outside)
    root = tmp_path / "models"
    (root / "breast-cancer").mkdir(parents=True)
    os.symlink(outside, root / "breast-cancer" / "1")
    with pytest.raises(ModelLoadError, match="outside the repository"):
        store.load_version("breast-cancer", 1, root / "breast-cancer" / "1", root=root)
    inside = root / "other" / "1"
    inside.mkdir(parents=True)
    shutil.copy(SHIPPED_MODEL / CARD_FILENAME, inside / CARD_FILENAME)
    os.symlink(outside / ONNX_FILENAME, inside / ONNX_FILENAME)
    with pytest.raises(ModelLoadError, match="outside its version folder"):
        store.load_version("breast-cancer", 1, inside, root=root)


def test_weights_rewritten_in_place_never_reach_a_loaded_session(tmp_path):
    """onnxruntime maps external data files: a session made from the path would serve whatever
    the file holds now. The store hands it the bytes it checked, so it serves those."""
    folder = tmp_path / "models" / "m" / "1"
    shutil.copytree(SHIPPED_MODEL, folder)
    onnx.save_model(onnx.load(str(folder / ONNX_FILENAME)), str(folder / ONNX_FILENAME),
                    save_as_external_data=True, location="weights.bin", size_threshold=0)
    card = json.loads((folder / CARD_FILENAME).read_text())
    card.update(name="m", version=1,
                onnx_sha256=hashlib.sha256((folder / ONNX_FILENAME).read_bytes()).hexdigest(),
                external_data_sha256={"weights.bin": hashlib.sha256(
                    (folder / "weights.bin").read_bytes()).hexdigest()})
    (folder / CARD_FILENAME).write_text(json.dumps(card))
    loaded = store.load_version("m", 1, folder, root=tmp_path / "models")
    rows = np.ones((2, loaded.card.input_dim), dtype=np.float32)
    before = loaded.session.run(rows, ("score",))["score"]
    size = (folder / "weights.bin").stat().st_size
    with open(folder / "weights.bin", "r+b") as handle:  # in place: same inode, same size
        handle.write(b"\0" * size)
    after = loaded.session.run(rows, ("score",))["score"]
    assert np.isfinite(before).all() and np.array_equal(before, after)
    with pytest.raises(ModelLoadError, match="sha256 is not the card's"):  # and a reload refuses
        store.load_version("m", 1, folder, root=tmp_path / "models")
