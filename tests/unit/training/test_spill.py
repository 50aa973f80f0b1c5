"""Data larger than memory: Parquet folders and globs, the spilled matrix, block shuffling."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from aeserve.training.data import DataError, load_dataset
from aeserve.training.trainer import _epoch_order


def write_parts(folder, parts=3, rows=50, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    frames = []
    for i in range(parts):
        X = rng.normal(size=(rows, 4)).astype(np.float32)
        y = (rng.random(rows) < 0.1).astype(np.int64)
        pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "d": X[:, 3],
                                 "y": y}), folder / f"part-{i}.parquet")
        frames.append((X, y))
    return np.vstack([X for X, _ in frames]), np.concatenate([y for _, y in frames])


def test_a_folder_and_a_glob_of_parquet_files_read_as_one_table_in_order(tmp_path):
    X, y = write_parts(tmp_path / "parts")
    for source in (tmp_path / "parts", tmp_path / "parts" / "part-*.parquet"):
        data = load_dataset(source, label_column="y")
        np.testing.assert_array_equal(data.X, X)
        assert data.y.tolist() == y.tolist() and data.feature_names == ["a", "b", "c", "d"]
    with pytest.raises(DataError, match="no file matches"):
        load_dataset(tmp_path / "parts" / "nothing-*.parquet")
    pq.write_table(pa.table({"a": [1.0], "z": [2.0]}), tmp_path / "parts" / "part-9.parquet")
    with pytest.raises(DataError, match="files read together must agree"):
        load_dataset(tmp_path / "parts")


def test_spilled_data_is_a_read_only_map_with_the_same_rows(tmp_path):
    X, _ = write_parts(tmp_path / "parts")
    spill = tmp_path / "spill"
    spill.mkdir()
    data = load_dataset(tmp_path / "parts", label_column="y", spill="always", spill_dir=spill)
    assert isinstance(data.X, np.memmap) and not data.X.flags.writeable
    np.testing.assert_array_equal(data.X, X)
    assert (spill / "rows.f32").stat().st_size == X.nbytes
    in_memory = load_dataset(tmp_path / "parts", label_column="y", spill="auto")
    assert not isinstance(in_memory.X, np.memmap)  # 600 values never exceed half the memory
    assert data.fingerprint() == in_memory.fingerprint()


@pytest.mark.parametrize("members", [1, 3])
def test_a_shuffle_buffer_mixes_runs_of_consecutive_rows_from_random_places(members):
    """Buffers of 256 rows: 64 segments of 4 consecutive rows each, from anywhere in the data;
    every row once an epoch; members share the buffers (the same reads) but not the order."""
    from aeserve.training.trainer import SEGMENTS_PER_BUFFER

    n, block = 664, 256
    segment = block // SEGMENTS_PER_BUFFER
    member_rows = None
    if members > 1:  # member k trains on the rows not congruent to k mod 3 (sorted, like folds)
        member_rows = torch.as_tensor(np.stack(
            [np.flatnonzero(np.arange(1000) % 3 != k)[:n] for k in range(3)]).astype(np.int32))
    order = _epoch_order(n, members, member_rows, None, torch.Generator().manual_seed(0),
                         block_rows=block).reshape(members, n)
    buffers, orders = [], []
    for k in range(members):
        rows = np.arange(n) if member_rows is None else member_rows[k].numpy()
        position = {int(r): i for i, r in enumerate(rows)}
        positions = np.array([position[int(r)] for r in order[k]])
        assert sorted(positions) == list(range(n))  # every row once
        orders.append(positions)
        mine = []
        for start in range(0, n, block):  # sizes 256, 256, 152
            part = positions[start:start + block]
            segments = sorted(set(part // segment))
            # Whole segments only, as many as fit, from far apart in the data.
            assert len(part) == len(segments) * segment == min(block, n - start)
            assert set(part) == {s * segment + j for s in segments for j in range(segment)}
            assert segments[-1] - segments[0] > 2 * SEGMENTS_PER_BUFFER
            assert list(part) != sorted(part)
            mine.append(segments)
        buffers.append(mine)
    assert all(b == buffers[0] for b in buffers)
    if members > 1:
        assert list(orders[0]) != list(orders[1])


def test_a_spilled_data_set_trains_the_same_model_as_in_memory(tmp_path):
    """Smaller than one shuffle block, a spilled set is shuffled whole, as in memory: the
    same model, byte for byte. With blocks smaller than the data it still trains and publishes."""
    import warnings

    from aeserve.training.pipeline import TrainOptions, train_and_export
    from aeserve.training.trainer import TrainConfig

    write_parts(tmp_path / "parts", parts=4, rows=100)
    (tmp_path / "spill").mkdir()
    spilled = load_dataset(tmp_path / "parts", label_column="y", spill="always",
                           spill_dir=tmp_path / "spill")
    in_memory = load_dataset(tmp_path / "parts", label_column="y")

    def train(data, name, block=0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return train_and_export(data, TrainOptions(
                name=name, models_dir=tmp_path / "models", command="t",
                train=TrainConfig(epochs=2, min_steps=0, progress=False,
                                  shuffle_block_rows=block))).card

    ours, theirs = train(spilled, "spilled"), train(in_memory, "memory")
    assert ours.onnx_sha256 == theirs.onnx_sha256 and ours.threshold == theirs.threshold
    blocked = train(spilled, "blocked", block=64)
    assert blocked.training.rows_train == ours.training.rows_train
    assert blocked.onnx_sha256 != ours.onnx_sha256  # another order, another model


def test_the_ray_engine_refuses_data_that_is_not_parquet(tmp_path):
    from aeserve.training.data import Dataset
    from aeserve.training.pipeline import TrainOptions, train_and_export
    from aeserve.training.trainer import TrainConfig

    X = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"--engine ray (reads Parquet|needs Ray)"):
        train_and_export(Dataset(X=X, y=None, feature_names=["a", "b", "c"], source="d.csv"),
                         TrainOptions(name="m", models_dir=tmp_path, engine="ray",
                                      train=TrainConfig(progress=False)))
    assert not (tmp_path / "m").exists()  # nothing trained, nothing published


def test_a_spilled_csv_is_parsed_a_block_at_a_time(tmp_path, monkeypatch):
    from aeserve.training import data as data_module

    monkeypatch.setattr(data_module, "CSV_BLOCK_BYTES", 256)  # many blocks for 200 rows
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).round(4)
    y = (rng.random(200) < 0.1).astype(int)
    lines = ["a,b,c,y"] + [f"{r[0]},{r[1]},{r[2]},{t}" for r, t in zip(X, y, strict=True)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "spill").mkdir()
    spilled = load_dataset(tmp_path / "d.csv", label_column="y", spill="always",
                           spill_dir=tmp_path / "spill")
    in_memory = load_dataset(tmp_path / "d.csv", label_column="y")
    assert isinstance(spilled.X, np.memmap) and not isinstance(in_memory.X, np.memmap)
    np.testing.assert_array_equal(spilled.X, in_memory.X)
    assert spilled.y.tolist() == in_memory.y.tolist() == y.tolist()
    lines[150] = "1.0,oops,2.0,0"  # a later block holds text where numbers were
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    # Line 151 of the file (the header is line 1), found again in the block that failed.
    with pytest.raises(DataError, match=r"d\.csv: column 'b' is not numeric: line 151 holds "
                                        r"'oops'"):
        load_dataset(tmp_path / "d.csv", label_column="y", spill="always",
                     spill_dir=tmp_path / "spill")
    (tmp_path / "h.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="no rows"):
        load_dataset(tmp_path / "h.csv", spill="always", spill_dir=tmp_path / "spill")
