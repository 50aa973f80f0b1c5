"""The members of an autoencoder exported as grouped 1x1 convolutions, rows along the length.

A model of K members runs each layer as one batched product over [K, N, n] tensors. onnxruntime
runs that as a batched MatMul followed by a separate Add for the bias and a separate activation,
each a pass over K x N x n values: at 4,096 rows those passes cost about as much as the products
(bench/results/model_profile.md). Laid out as one sequence of N positions with the members'
units as channels ([1, K * n, N]), every layer is a 1x1 convolution (grouped by member after the
first, whose input every member shares) that onnxruntime fuses with its bias and activation and
runs as one matrix product per member over all rows. The mean over the members is a product
with a [1, K] vector of 1/K, which runs at less than half the cost of a reduction over a leading
axis.

The layout also makes a row's outputs independent of the other rows of its run (two rows or
more; a single row is multiplied by another kernel), which the [N, d] layout does not:
onnxruntime's vectorised kernels round by a value's position. The score's terms stay one
feature per row of [d, N] until they are output, so the mean over features is a sum down each
column, which adds a row's terms in the same order wherever the row sits; and the logarithm,
which onnxruntime computes in vectors (of up to 16 values) but the last, partial vector of a
buffer another way, runs over the features padded to a whole number of `VECTOR_VALUES`, so no
value ever falls in a partial vector (tests/unit/training/test_member_convolutions.py). With one
onnxruntime thread (the server's and the batch scorer's default; more threads cut a buffer
where its length says) a row then scores the same bits in a request of a few rows and in a
batch file of a million.

`MemberConvolutions` computes exactly what `ScoringGraph.forward` computes (the exporter checks
their parity on every model) and exists only to be traced: training and the torch reference keep
the batched module (training/model.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # the scoring graph imports this module
    from aeserve.training.export import ScoringGraph

#: The widest vector of float32 values onnxruntime's kernels compute at once (AVX-512): the
#: logarithm's input is padded to a whole number of them, which are whole numbers of narrower
#: vectors too.
VECTOR_VALUES = 16


class MemberConvolutions(nn.Module):
    """Raw features [N, d] in; embedding, raw reconstruction, score and per-feature terms out,
    as `ScoringGraph` returns them, for a model of several members. Needs at least one row:
    a convolution over zero positions is an error in onnxruntime (`ModelSession.run` answers
    zero rows without running the graph)."""

    def __init__(self, graph: ScoringGraph) -> None:
        super().__init__()
        model = graph.model
        if model.decoder is None or model.config.members < 2:
            raise ValueError("member convolutions need several members with untied weights")
        self.members = model.config.members
        self.input_dim = model.config.input_dim
        self.embedding_dim = model.config.embedding_dim
        self.activation = model.activation
        self.sigmoid_decoder = model.config.decoder_activation == "sigmoid"
        self.cauchy = graph.score_kind == "residual_cauchy"
        layers = [*model.encoder, *model.decoder]
        self.encoder_layers = len(model.encoder)
        self.convolutions = nn.ModuleList(
            _convolution(layer.weight.detach(), layer.bias.detach(), shared_input=i == 0)
            for i, layer in enumerate(layers))
        self.register_buffer("offset", graph.offset.clone())
        self.register_buffer("scale", graph.scale.clone())
        self.register_buffer("average", torch.full((1, self.members), 1.0 / self.members))
        if self.cauchy:
            self.padding = -self.input_dim % VECTOR_VALUES
            self.register_buffer("residual_scale", torch.cat([
                graph.residual_scale, torch.ones(self.padding)]))

    def _over_members(self, values: torch.Tensor) -> torch.Tensor:
        """[K, d * N] -> [d, N], the mean over members as one product."""
        return torch.matmul(self.average, values).reshape(self.input_dim, -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = ((x - self.offset) / self.scale).transpose(0, 1)  # [d, N]
        h = z.unsqueeze(0)
        last = len(self.convolutions) - 1
        code = h
        for i, convolution in enumerate(self.convolutions):
            h = convolution(h)
            if i < last:
                h = self.activation(h)
            if i == self.encoder_layers - 1:
                code = h
        if self.sigmoid_decoder:
            h = torch.sigmoid(h)
        z_hat = h.reshape(self.members, -1)  # member k's row: its [d, N] reconstruction, flat
        residual = z_hat - z.reshape(1, -1)
        squared = self._over_members(residual * residual)
        if not self.cauchy:
            terms = squared
        elif self.padding:  # whole vectors of features for the logarithm, dropped after it
            padded = torch.nn.functional.pad(squared, (0, 0, 0, self.padding))
            terms = torch.log1p(padded / self.residual_scale[:, None])[:self.input_dim]
        else:
            terms = torch.log1p(squared / self.residual_scale[:, None])
        reconstruction = self._over_members(z_hat) * self.scale[:, None] + self.offset[:, None]
        embedding = code.reshape(self.embedding_dim, -1).transpose(0, 1)
        return (embedding, reconstruction.transpose(0, 1), terms.mean(dim=0),
                terms.transpose(0, 1))


def _convolution(weight: torch.Tensor, bias: torch.Tensor, *, shared_input: bool) -> nn.Conv1d:
    """One member layer ([K, out, in] weights, [K, out] biases) as a 1x1 convolution over
    [1, K * in, N] (or [1, in, N] when every member reads the same input) to [1, K * out, N]:
    member k's units are channels k * out to (k + 1) * out - 1."""
    members, n_out, n_in = weight.shape
    convolution = nn.Conv1d(n_in if shared_input else members * n_in, members * n_out, 1,
                            groups=1 if shared_input else members)
    with torch.no_grad():
        convolution.weight.copy_(weight.reshape(members * n_out, n_in, 1))
        convolution.bias.copy_(bias.reshape(members * n_out))
    return convolution
