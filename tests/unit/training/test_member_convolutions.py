"""Several members exported as grouped 1x1 convolutions: the same numbers as the batched module."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from aeserve.training.export import ScoringGraph, write_onnx
from aeserve.training.member_convolutions import MemberConvolutions
from aeserve.training.model import Autoencoder, AutoencoderConfig
from aeserve.training.preprocessing import AffineScaler
from tests.unit.training.handmade import two_member_identity_model


def exported(graph: ScoringGraph, input_dim: int, folder) -> ort.InferenceSession:
    path = folder / "model.onnx"
    write_onnx(graph, input_dim, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the server and the batch scorer run it
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_the_exported_graph_gives_the_hand_computed_numbers(tmp_path):
    # Offset (1, 2), scale (1, 2): x = (4, 4) is z = (3, 1) and x = (1, 2) is z = 0.
    scaler = AffineScaler("standard", np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    graph = ScoringGraph(two_member_identity_model(), scaler, "residual_cauchy",
                         residual_scale=np.array([1.0, 4.0]))
    session = exported(graph, 2, tmp_path)
    embedding, reconstruction, score, terms = session.run(
        None, {"x": np.array([[4.0, 4.0], [1.0, 2.0]], dtype=np.float32)})
    # Member 0 rebuilds z exactly, member 1 answers 0: mean squared errors (9/2, 1/2) over the
    # scales (1, 4) give the terms log(5.5) and log(1.125).
    np.testing.assert_allclose(terms, [[math.log(5.5), math.log(1.125)], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(score, [(math.log(5.5) + math.log(1.125)) / 2, 0.0], rtol=1e-6)
    # The members' mean reconstruction z_hat = (1.5, 0.5), in raw units (2.5, 3); at the
    # offset both members answer 0, which is the offset itself.
    np.testing.assert_allclose(reconstruction, [[2.5, 3.0], [1.0, 2.0]], rtol=1e-6)
    # The codes side by side, member by member: relu(z) = (3, 1) and member 1's (0, 0).
    np.testing.assert_allclose(embedding, [[3.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_members_are_exported_as_convolutions_fused_with_their_bias(tmp_path):
    model = Autoencoder(AutoencoderConfig(input_dim=6, hidden_sizes=[8, 4, 2],
                                          activation="relu", members=3))
    scaler = AffineScaler("standard", np.zeros(6), np.ones(6))
    write_onnx(ScoringGraph(model, scaler), 6, tmp_path / "model.onnx")
    nodes = onnx.load(str(tmp_path / "model.onnx")).graph.node
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1)
              for n in nodes if n.op_type == "Conv"]
    # Six layers; the first reads the shared input, every later one is grouped by member.
    assert groups == [1, 3, 3, 3, 3, 3]
    assert "Add" not in {n.op_type for n in nodes if n.output[0].startswith("/convolutions")}


@pytest.mark.parametrize(("activation", "decoder", "score", "hidden"), [
    ("relu", "identity", "residual_cauchy", [16, 8, 4]),
    ("relu", "identity", "mse_scaled", [5]),
    ("tanh", "identity", "residual_cauchy", [7, 3]),
    ("sigmoid", "sigmoid", "mse_scaled", [6, 2]),
])
def test_the_convolutions_compute_what_the_batched_members_compute(tmp_path, activation, decoder,
                                                                   score, hidden):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    d = 9
    model = Autoencoder(AutoencoderConfig(input_dim=d, hidden_sizes=hidden, activation=activation,
                                          decoder_activation=decoder, members=4))
    scaler = AffineScaler("standard", rng.normal(size=d), rng.uniform(0.5, 2.0, size=d))
    scales = rng.uniform(0.1, 1.0, size=d) if score == "residual_cauchy" else None
    graph = ScoringGraph(model, scaler, score, residual_scale=scales).eval()
    rows = rng.normal(size=(37, d)).astype(np.float32)
    with torch.no_grad():
        want = graph(torch.from_numpy(rows))
        in_torch = MemberConvolutions(graph)(torch.from_numpy(rows))
    got = exported(graph, d, tmp_path).run(None, {"x": rows})
    for expected, convolved, onnx_out in zip(want, in_torch, got, strict=True):
        assert convolved.shape == expected.shape == onnx_out.shape
        torch.testing.assert_close(convolved, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(onnx_out, expected.numpy(), rtol=1e-5, atol=1e-5)
    # A row scores the same alone, in a pair, and among the 37: rows never mix.
    session = exported(graph, d, tmp_path)
    for batch in (rows[5:6], rows[5:7]):
        np.testing.assert_allclose(session.run(["score"], {"x": batch})[0][0],
                                   got[2][5], rtol=1e-5)


@pytest.mark.parametrize("score", ["residual_cauchy", "mse_scaled"])
def test_a_row_gets_the_same_bits_whatever_else_is_in_its_run(tmp_path, score):
    """Two rows or more: a row's outputs do not depend on where it sits in the run, on how
    long the run is, or on the other rows (a single row is multiplied by another kernel)."""
    torch.manual_seed(1)
    d = 7  # an odd width: in [N, d] rows would straddle onnxruntime's vectors
    model = Autoencoder(AutoencoderConfig(input_dim=d, hidden_sizes=[64, 32, 8],
                                          activation="relu", members=5))
    rng = np.random.default_rng(1)
    scales = rng.uniform(0.1, 1.0, size=d) if score == "residual_cauchy" else None
    graph = ScoringGraph(model, AffineScaler("standard", np.zeros(d), np.ones(d)), score,
                         residual_scale=scales)
    session = exported(graph, d, tmp_path)
    rows = rng.normal(size=(300, d)).astype(np.float32)
    reference = session.run(None, {"x": rows})
    for length in range(2, 40):
        for start in rng.choice(300 - length, size=5, replace=False):
            got = session.run(None, {"x": rows[start:start + length]})
            for want, out in zip(reference, got, strict=True):
                np.testing.assert_array_equal(out, want[start:start + length])


def test_a_single_network_is_exported_as_it_is():
    model = Autoencoder(AutoencoderConfig(input_dim=3, hidden_sizes=[2]))
    graph = ScoringGraph(model, AffineScaler("standard", np.zeros(3), np.ones(3)))
    with pytest.raises(ValueError, match="several members"):
        MemberConvolutions(graph)
