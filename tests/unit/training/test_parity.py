"""The parity check between torch and the exported graph: strict where float32 is exact enough,
and not fooled by rounding where a score's term is ill-conditioned."""

from __future__ import annotations

import numpy as np
import torch

from aeserve.training.export import (
    PARITY_TOLERANCE,
    ScoringGraph,
    make_session,
    parity_error,
    write_onnx,
)
from aeserve.training.model import Autoencoder, AutoencoderConfig
from aeserve.training.preprocessing import fit_scaler


def exported(tmp_path):
    """A network that reconstructs positive rows up to rounding (decoder = the encoder's
    inverse), with a tiny typical error on every feature: its Cauchy terms are
    ill-conditioned, the worst case for comparing two float32 engines."""
    A = np.eye(6) + np.random.default_rng(0).uniform(0.0, 0.2, size=(6, 6))
    model = Autoencoder(AutoencoderConfig(6, [6], activation="relu")).eval()
    with torch.no_grad():
        model.encoder[0].weight.copy_(torch.as_tensor(A))
        model.decoder[0].weight.copy_(torch.as_tensor(np.linalg.inv(A)))
        model.encoder[0].bias.zero_()
        model.decoder[0].bias.zero_()
    scaler = fit_scaler(np.array([[0.0] * 6, [2.0] * 6]), "standard")  # z = x - 1
    graph = ScoringGraph(model, scaler, "residual_cauchy", residual_scale=np.full(6, 1e-6))
    write_onnx(graph, 6, tmp_path / "m.onnx")
    return graph, make_session(tmp_path / "m.onnx"), scaler


def test_a_correct_export_passes_even_on_rows_far_out(tmp_path):
    graph, session, scaler = exported(tmp_path)
    rows = np.random.default_rng(1).uniform(100.0, 1000.0, size=(500, 6)).astype(np.float32)
    assert parity_error(graph, session, rows, scaler.scale) <= PARITY_TOLERANCE


def test_a_graph_that_differs_from_torch_fails(tmp_path):
    graph, session, scaler = exported(tmp_path)
    with torch.no_grad():  # torch's weights move by 1e-3 after the export
        for parameter in graph.model.parameters():
            parameter.mul_(1.001)
    rows = np.random.default_rng(1).uniform(1.0, 3.0, size=(500, 6)).astype(np.float32)
    assert parity_error(graph, session, rows, scaler.scale) > 10 * PARITY_TOLERANCE
