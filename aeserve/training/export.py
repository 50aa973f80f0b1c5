"""Export a trained autoencoder as one ONNX graph with preprocessing and scoring folded in.

The graph takes raw features `x` [N, d] and returns `embedding` [N, k], `reconstruction` [N, d] (raw
feature space), `score` [N] and `feature_errors` [N, d] (each feature's term of the score, whose
mean is the score: the squared error in the scaled space, or for `residual_cauchy` its
log(1 + e / s)). Parity with torch is checked before anything is written; the version folder
appears in one rename, so a reader never sees half a model.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from aeserve.artifact.card import (
    INPUT_NAME,
    OUTPUT_NAMES,
    ScoreKind,
)
from aeserve.training.member_convolutions import MemberConvolutions
from aeserve.training.model import Autoencoder
from aeserve.training.preprocessing import AffineScaler, mean_and_std
from aeserve.training.regularizers import gaussian_kl

ONNX_OPSET = 17
PARITY_ROWS = 1000
PARITY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The exported graph disagrees with torch, or the artifact cannot be written."""


class ScoringGraph(nn.Module):
    """Raw features in; embedding, raw-space reconstruction, score and per-feature terms out.

    Deterministic for every variant: the VAE is evaluated at its mean code `mu`. Score kinds
    (the card's `SCORE_DESCRIPTIONS`):

    - `residual_cauchy`: mean over features of log(1 + e_j / s_j), with e_j the squared error
      in the scaled space and s_j = `residual_scale` (training/residual_scale.py). Residuals of
      reconstruction are heavy-tailed: under squared error one feature the network cannot
      rebuild, or rebuilds poorly for every row, dominates every score, and a row's one huge
      error outweighs moderate errors on many features. The Cauchy log-likelihood weighs each
      feature by its own typical error and grows only logarithmically in it.
    - `mse_scaled`: mean over features of the squared error in the scaled space.
    - `neg_elbo_scaled` (VAE): squared error summed over features plus beta times the closed-form
      KL of q(z | x) from N(0, I), divided by the number of features.

    With several members, each feature's squared error is averaged over the members before it
    becomes a term: the mean error keeps what the members add (their disagreement on a row,
    since mean_k (z - y_k)^2 = (z - mean y)^2 + var_k y_k), and the graph takes one logarithm
    per feature instead of one per member and feature, the largest part of its cost.
    """

    def __init__(self, model: Autoencoder, scaler: AffineScaler,
                 score_kind: ScoreKind = "mse_scaled", vae_beta: float = 1.0,
                 residual_scale: np.ndarray | None = None) -> None:
        super().__init__()
        if score_kind == "neg_elbo_scaled" and model.config.variant != "vae":
            raise ValueError("the neg_elbo_scaled score needs the vae variant")
        if (score_kind == "residual_cauchy") != (residual_scale is not None):
            raise ValueError("residual_scale is needed by the residual_cauchy score, and only "
                             "by it")
        self.model = model
        self.score_kind = score_kind
        self.vae_beta = vae_beta
        self.register_buffer("offset", torch.as_tensor(scaler.offset, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scaler.scale, dtype=torch.float32))
        if residual_scale is not None:
            if residual_scale.shape != (model.config.input_dim,) or not np.all(
                    residual_scale > 0):
                raise ValueError("residual_scale must hold one positive value per feature")
            self.register_buffer("residual_scale",
                                 torch.as_tensor(residual_scale, dtype=torch.float32))

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.offset) / self.scale

    def terms(self, squared: torch.Tensor) -> torch.Tensor:
        """Each feature's term of the reconstruction score from its squared error."""
        if self.score_kind == "residual_cauchy":
            return torch.log1p(squared / self.residual_scale)
        return squared

    def member_scores(self, x: torch.Tensor) -> torch.Tensor:
        """[K, N]: each member's own reconstruction score of each row (for the cross-fitted
        calibration, which needs the score of the member that never saw a row)."""
        z = self.scaled(x)
        return self.terms((self.model(z)[1] - z) ** 2).mean(dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.scaled(x)
        if self.score_kind == "neg_elbo_scaled":
            embedding, logvar = self.model.encode_distribution(z)
        else:
            embedding = self.model.encode(z)
        z_hat = self.model.decode(embedding)
        residual = z_hat - z
        squared = residual * residual  # a product, cheaper in onnxruntime than Pow
        if z_hat.dim() == 3:  # members [K, N, .]: mean errors and reconstruction; codes joined
            squared = squared.mean(dim=0)
            z_hat = z_hat.mean(dim=0)
            embedding = embedding.transpose(0, 1).flatten(start_dim=1)
        feature_errors = self.terms(squared)
        if self.score_kind == "neg_elbo_scaled":
            kl = gaussian_kl(embedding, logvar)
            score = (feature_errors.sum(dim=1) + self.vae_beta * kl) / z.shape[1]
        else:
            score = feature_errors.mean(dim=1)
        return embedding, z_hat * self.scale + self.offset, score, feature_errors


def traceable(graph: ScoringGraph) -> nn.Module:
    """The module whose trace becomes the ONNX graph: several members as grouped convolutions
    (training/member_convolutions.py, the same outputs at a fraction of onnxruntime's cost),
    a single network as it is."""
    if graph.model.config.members > 1:
        return MemberConvolutions(graph)
    return graph


def write_onnx(graph: ScoringGraph, input_dim: int, path: Path) -> None:
    """The graph's ONNX file; `parity_error` then checks it against `graph` itself."""
    graph.eval()
    example = torch.zeros(2, input_dim, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            traceable(graph).eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def embed_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Write `metadata` into the ONNX file's `metadata_props` (the graph itself unchanged):
    onnxruntime and every ONNX tool read it as the model's custom metadata."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))


def parity_rows(X: np.ndarray, seed: int, n_rows: int = PARITY_ROWS) -> np.ndarray:
    """Half resampled data rows, half Gaussian rows at the data's scale (checks extrapolation)."""
    rng = np.random.default_rng(seed)
    n_data = n_rows // 2
    resampled = X[rng.integers(0, len(X), size=n_data)]
    mean, std = mean_and_std(X)
    std = std + 1e-3 * (np.abs(mean) + 1.0)
    synthetic = rng.normal(mean, 2.0 * std, size=(n_rows - n_data, X.shape[1]))
    return np.vstack([resampled, synthetic]).astype(np.float32)


def parity_error(graph: ScoringGraph, session: ort.InferenceSession, rows: np.ndarray,
                 scale: np.ndarray) -> float:
    """Largest difference between torch and onnxruntime over all outputs and elements, in units
    where `PARITY_TOLERANCE` is the most that passes.

    Absolute for values up to 1 and relative above, `|t - o| / max(1, |t|)` (numpy's `isclose`
    with atol = rtol): float32 keeps about 7 significant digits, so a score of 500 cannot agree
    to 1e-4 in absolute terms even when both engines are right. The reconstruction is compared in
    the scaled space, where every feature has unit spread. A score's terms (`feature_errors`,
    and `score`, their mean) also get the difference that float32 rounding can explain, bounded
    a priori (`_rounding_slack`): a squared error `e = (z_hat - z)^2` of
    a far-out row is a small difference of large numbers, and the Cauchy term log(1 + e / s)
    magnifies it by 1 / (s + e) where a feature's typical error `s` is tiny. Two correct engines
    differ there by far more than 1e-4; a graph that computes something else differs by more
    than rounding can.
    """
    with torch.no_grad():
        x = torch.from_numpy(rows)
        expected = [t.numpy().astype(np.float64) for t in graph(x)]
    actual = [a.astype(np.float64) for a in session.run(list(OUTPUT_NAMES), {INPUT_NAME: rows})]
    slack = _rounding_slack(graph, x)
    worst = 0.0
    for name, want, got in zip(OUTPUT_NAMES, expected, actual, strict=True):
        if name == "reconstruction":
            want, got = want / scale, got / scale
        allowed = np.maximum(1.0, np.abs(want))
        if name == "feature_errors":
            allowed = allowed + slack / PARITY_TOLERANCE
        elif name == "score":
            allowed = allowed + slack.mean(axis=1) / PARITY_TOLERANCE
        worst = max(worst, float((np.abs(want - got) / allowed).max()))
    return worst


def _rounding_slack(graph: ScoringGraph, x: torch.Tensor) -> np.ndarray:
    """Per row and feature, how far float32 rounding can move the score's term: the width of
    the term over the reconstruction errors that rounding allows.

    The bound is the textbook one for a chain of matrix products, |fl(W h) - W h| <= n eps |W||h|
    per layer of fan-in n: the network run with the absolute values of its weights and inputs
    gives |W||h| at the output, times the sum of the fan-ins times float32's eps (members
    apart: the terms take their mean squared error).
    """
    eps = float(np.finfo(np.float32).eps)
    magnitudes = copy.deepcopy(graph.model)
    with torch.no_grad():
        for parameter in magnitudes.parameters():
            parameter.abs_()
        z = graph.scaled(x)
        # The model's own forward decodes the code (the VAE's mean mu), as the graph does.
        error = (graph.model(z)[1] - z).abs()  # [K, N, d] or [N, d]
        bound = magnitudes.decode_logits(magnitudes.encode(z.abs()))
        fan_ins = sum(p.shape[-1] for name, p in graph.model.named_parameters()
                      if name.endswith("weight") and p.dim() >= 2 and "logvar" not in name)
        moved = (fan_ins + 4) * eps * (bound + z.abs() + 1.0)
        high, low = (error + moved) ** 2, (error - moved).clamp(min=0.0) ** 2
        if high.dim() == 3:  # members: the terms take their mean squared error
            high, low = high.mean(dim=0), low.mean(dim=0)
        width = graph.terms(high) - graph.terms(low)
    return width.numpy().astype(np.float64)


def make_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
