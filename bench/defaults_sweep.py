"""One training configuration on the quality protocol: the sweep that chose the defaults.

Cheaper than `bench/quality.py` for comparing configurations: it runs the training loop and scores
the test rows in torch (the exported graph scores the same within the parity tolerance), with no
export and no peers. docs/variants.md lists the configurations compared and their figures.

    python -m bench.defaults_sweep '{"members": 5, "epochs": 20, "min_steps": 250}' [--settings
        one-class unsupervised] [--seeds 0 1 2] [--csv out.csv]

Configuration keys (anything absent takes the value in brackets): hidden ([64, 32, 8]),
code_at_most_half (false: true narrows the code to at most half the features, and 2 at least),
code_from_variance (none: a share such as 0.95 narrows the code to the principal components of
the scaled training rows that hold that share of their variance), code_widened_to_variance
(none: [share, most] widens the code to those components, at most `most` units, never
narrower than the default's),
activation ("relu"), members (1), cross_fit (false: with a `holdout` share of the rows kept out,
or none when 0), holdout (0.2), lr (3e-3), batch (128), epochs (80), min_steps (0),
patience (100000), restore (true: keep the best validation epoch), trim (0: the share of each
batch's worst-reconstructed rows left out of the gradient), trim_warmup (5 epochs before trimming
starts), step_budget (0: no cap on the gradient steps), min_epochs (10: the
fewest epochs a step budget leaves), variant ("ae"; "denoising" reads noise, "gaussian", and
noise_level, 0.2), scaling ("standard", or "robust" or "minmax"), refit_drop (0: with
cross_fit, the share of rows with the highest out-of-fold scores dropped before training again),
refit_mads (0: instead, drop the rows whose out-of-fold score lies more than this many MADs
above the median),
score ("residual_cauchy", the default, with the residual scales from the held-out rows; or
"mse_scaled"), loss ("squared": the squared error; or "cauchy", `cauchy_error`), memory (none;
or {"items": 50, "shrink": 1.0, "entropy": 2e-4, "cosine": true, "temperature": 1.0}:
`MemoryAutoencoder`), dropout (0: the probability of dropping each unit while training,
`DropoutAutoencoder`), weight_decay (0: Adam's L2 penalty on every parameter),
steps_per_epoch (none: with a count k, each network's batch is its rows / k, between min_batch
(16) and batch, so that small data gets k steps a pass instead of one).

The means are reported for each development group apart (selection, confirmation, embeddings:
bench/protocol.py).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import ClassVar  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

from aeserve.training.export import ScoringGraph  # noqa: E402
from aeserve.training.losses import squared_error  # noqa: E402
from aeserve.training.model import Autoencoder, AutoencoderConfig  # noqa: E402
from aeserve.training.objectives import VariantOptions  # noqa: E402
from aeserve.training.pipeline import split_normal_rows  # noqa: E402
from aeserve.training.preprocessing import fit_scaler  # noqa: E402
from aeserve.training.residual_scale import floored, residual_scale  # noqa: E402
from aeserve.training.trainer import TrainConfig, fold_assignment, train_autoencoder  # noqa: E402
from bench.protocol import SEEDS, Split, dataset_paths, group_of, splits  # noqa: E402

#: The optimiser the trainer builds, kept before `run` wraps it with a weight decay.
ADAM = torch.optim.Adam


def cauchy_error(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The `"loss": "cauchy"` training loss: per row, sum_j log(1 + e_j / s_j), e_j the
    squared error of feature j and s_j its median over the batch (not differentiated), the
    likelihood the score is measured with, whose gradient 1 / (s_j + e_j) weighs down the rows
    the network rebuilds worst."""
    errors = (reconstruction - target) ** 2
    scale = errors.detach().median(dim=-2, keepdim=True).values.clamp_min(1e-6)
    return torch.log1p(errors / scale).sum(dim=-1)


class MemoryAutoencoder(Autoencoder):
    """The `"memory"` configuration: a memory-augmented autoencoder (Gong et al., "Memorizing
    Normality to Detect Anomaly", ICCV 2019), one memory per member.

    The code z is replaced by a combination of `items` learned prototypes m_i before decoding:
    w = softmax(sim(z, m_i) / temperature), weights below `shrink` / items cut to zero (the
    paper's hard shrinkage), the rest renormalised, z' = sum_i w_i m_i; the loss adds `entropy`
    times the weights' entropy, which keeps them sparse. The decoder can then only rebuild
    combinations of prototypes of the training rows, so it cannot generalise to an anomaly,
    however many of them the training rows hold. With `"both": true` every member decodes z and
    z' alike, is trained on both reconstructions, and the score adds their Cauchy terms
    (`memory_and_plain_scores`). A measurement, not a variant of the product.
    """

    options: ClassVar[dict] = {}

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config)
        items, code = self.options.get("items", 50), config.hidden_sizes[-1]
        self.memory = torch.nn.Parameter(  # drawn after the trainer seeds torch
            torch.randn(config.members, items, code) / code ** 0.5)
        self._weights = torch.empty(0)

    def read(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory's read-out z' for codes z, and its addressing weights."""
        memory = self.memory if z.dim() == 3 else self.memory[0]
        if self.options.get("cosine", True):  # the paper's similarity
            logits = F.normalize(z, dim=-1) @ F.normalize(memory, dim=-1).transpose(-1, -2)
        else:
            logits = z @ memory.transpose(-1, -2)
        w = torch.softmax(logits / self.options.get("temperature", 1.0), dim=-1)
        cut = self.options.get("shrink", 1.0) / memory.shape[-2]
        w = F.relu(w - cut) * w / ((w - cut).abs() + 1e-12)
        w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return w @ memory, w

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = super().encode(x)
        if self.options.get("both", False):
            return z
        read_out, self._weights = self.read(z)
        return read_out

    def reconstruction_loss(self, code: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = super().reconstruction_loss(code, target)
        w = self._weights
        if self.options.get("both", False):
            read_out, w = self.read(code)
            loss = loss + super().reconstruction_loss(read_out, target)
        entropy = -(w * torch.log(w + 1e-12)).sum(dim=-1)
        return loss + self.options.get("entropy", 2e-4) * entropy


class DropoutAutoencoder(Autoencoder):
    """Every unit (hidden layers and code) dropped with probability `p` while training, as
    PyOD's AutoEncoder does (0.2): a network that cannot rely on any one path rebuilds what
    many rows share and memorises single rows less. Scoring (eval mode) uses every unit."""

    p: ClassVar[float] = 0.0

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config)
        activation = self._s_f
        self._s_f = lambda h: F.dropout(activation(h), self.p, self.training)


def memory_and_plain_scores(model: MemoryAutoencoder, scaler, X_held_out: np.ndarray,
                            folds: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """`"both"`: the Cauchy score of the members' decoded codes plus that of their decoded
    memory read-outs, each feature's scale from the cross-fitted held-out errors."""
    def errors(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = torch.as_tensor(scaler.transform(X), dtype=torch.float32)
        code = model.encode(z)
        return (((model.decode(code) - z) ** 2).numpy(),
                ((model.decode(model.read(code)[0]) - z) ** 2).numpy())

    model.eval()
    with torch.no_grad():
        held_out, test = errors(X_held_out), errors(X_test)
    rows = np.arange(len(X_held_out))
    score = np.zeros(len(X_test))
    for fit, new in zip(held_out, test, strict=True):
        scale = floored(np.median(fit[folds, rows], axis=0))
        score += np.log1p(new.mean(axis=0) / scale).mean(axis=1)
    return score


def run(split: Split, cfg: dict) -> tuple[np.ndarray, float]:
    """Test scores (the exported graph's score, computed in torch) and training seconds."""
    import aeserve.training.model as model_module
    import aeserve.training.trainer as trainer_module

    model_module.squared_error = (cauchy_error if cfg.get("loss") == "cauchy"
                                  else squared_error)
    MemoryAutoencoder.options = cfg.get("memory") or {}
    trainer_module.Autoencoder = MemoryAutoencoder if "memory" in cfg else Autoencoder
    if cfg.get("dropout", 0.0) > 0:
        DropoutAutoencoder.p = cfg["dropout"]
        trainer_module.Autoencoder = DropoutAutoencoder
    trainer_module.torch.optim.Adam = functools.partial(ADAM, weight_decay=cfg.get(
        "weight_decay", 0.0))
    members = cfg.get("members", 1)
    hidden = list(cfg.get("hidden", [64, 32, 8]))
    if cfg.get("code_at_most_half", False):  # a bottleneck for low-dimensional data too
        hidden[-1] = min(hidden[-1], max(2, split.X_fit.shape[1] // 2))
    if cfg.get("code_from_variance"):  # the training rows' linear intrinsic dimension
        scaled = fit_scaler(split.X_fit, "standard").transform(split.X_fit)
        eigen = np.linalg.eigvalsh(np.cov(scaled.T))[::-1]
        needed = np.searchsorted(np.cumsum(eigen) / eigen.sum(), cfg["code_from_variance"]) + 1
        hidden[-1] = min(hidden[-1], int(needed))
    if cfg.get("code_widened_to_variance"):  # [share, most]: a wider code for rich data
        share, most = cfg["code_widened_to_variance"]
        scaled = fit_scaler(split.X_fit, "standard").transform(split.X_fit)
        eigen = np.linalg.eigvalsh(np.cov(scaled.T))[::-1]
        needed = int(np.searchsorted(np.cumsum(eigen) / eigen.sum(), share) + 1)
        hidden[-1] = int(np.clip(needed, hidden[-1], most))
        hidden[-2] = max(hidden[-2], hidden[-1])
    model_config = AutoencoderConfig(input_dim=split.X_fit.shape[1], hidden_sizes=hidden,
                                     activation=cfg.get("activation", "relu"), members=members,
                                     variant=cfg.get("variant", "ae"))
    variant_options = VariantOptions(noise=cfg.get("noise", "gaussian"),
                                     noise_level=cfg.get("noise_level", 0.2))
    batch = cfg.get("batch", 128)
    if cfg.get("steps_per_epoch"):  # small data: smaller batches, so that a pass is k steps
        member_rows = len(split.X_fit) * (members - 1) // members if cfg.get(
            "cross_fit") else len(split.X_fit)
        batch = int(np.clip(-(-member_rows // cfg["steps_per_epoch"]),
                            cfg.get("min_batch", 16), batch))
    train_config = TrainConfig(
        seed=split.seed, progress=False, epochs=cfg.get("epochs", 80),
        batch_size=batch, learning_rate=cfg.get("lr", 3e-3),
        patience=cfg.get("patience", 100_000), min_steps=cfg.get("min_steps", 0),
        restore_best=cfg.get("restore", True), trim_fraction=cfg.get("trim", 0.0),
        trim_warmup_epochs=cfg.get("trim_warmup", 5), step_budget=cfg.get("step_budget", 0),
        min_epochs=cfg.get("min_epochs", 10))
    if cfg.get("cross_fit", False):
        X_train, drop, spent = split.X_fit, cfg.get("refit_drop", 0.0), 0.0
        mads = cfg.get("refit_mads", 0.0)
        for first in ([True, False] if drop > 0 or mads > 0 else [False]):
            scaler = fit_scaler(X_train, cfg.get("scaling", "standard"))
            folds = fold_assignment(len(X_train), members, split.seed)
            Z = scaler.transform(X_train)
            result = train_autoencoder(Z, None, model_config, train_config, variant_options,
                                       folds=folds)
            spent += result.duration_s
            if first:  # drop the rows whose out-of-fold score is highest, and train again
                scorer = ScoringGraph(result.model, scaler, "residual_cauchy",
                                      residual_scale=residual_scale(result.model, Z, folds))
                with torch.no_grad():
                    per_member = scorer.member_scores(
                        torch.as_tensor(X_train, dtype=torch.float32)).numpy()
                held_out = per_member[folds, np.arange(len(X_train))]
                if mads > 0:  # beyond the median by `mads` normal-consistent MADs
                    median = np.median(held_out)
                    mad = 1.4826 * np.median(np.abs(held_out - median))
                    X_train = X_train[held_out <= median + mads * mad]
                else:
                    X_train = X_train[held_out <= np.quantile(held_out, 1.0 - drop)]
        result = dataclasses.replace(result, duration_s=spent)
        X_held_out = X_train
    else:
        holdout = cfg.get("holdout", 0.2)
        if holdout > 0:
            train_idx, val_idx = split_normal_rows(len(split.X_fit), holdout, split.seed)
            X_train, X_val = split.X_fit[train_idx], split.X_fit[val_idx]
        else:  # train on every row; the "validation" loss is then an in-sample one
            X_train, X_val = split.X_fit, split.X_fit[:256]
        scaler = fit_scaler(X_train, cfg.get("scaling", "standard"))
        result = train_autoencoder(scaler.transform(X_train), scaler.transform(X_val),
                                   model_config, train_config, variant_options)
        X_held_out, folds = X_val, None
    if cfg.get("memory", {}).get("both", False):
        return (memory_and_plain_scores(result.model, scaler, X_held_out, folds, split.X_test),
                result.duration_s)
    score_kind = cfg.get("score", "residual_cauchy")
    scales = (residual_scale(result.model, scaler.transform(X_held_out), folds)
              if score_kind == "residual_cauchy" else None)
    graph = ScoringGraph(result.model, scaler, score_kind, residual_scale=scales).eval()
    with torch.no_grad():
        scores = graph(torch.as_tensor(split.X_test, dtype=torch.float32))[2]
    return scores.numpy().astype(np.float64), result.duration_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="JSON object, keys as in the module docstring")
    parser.add_argument("--settings", nargs="+", default=["one-class"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    cfg = json.loads(args.config)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = []
    for path in dataset_paths(only=args.datasets):
        for split in splits(path, tuple(args.seeds), tuple(args.settings)):
            scores, fit_s = run(split, cfg)
            rows.append({"dataset": split.dataset, "seed": split.seed, "setting": split.setting,
                         "roc_auc": roc_auc_score(split.y_test, scores),
                         "average_precision": average_precision_score(split.y_test, scores),
                         "fit_s": fit_s})
    frame = pd.DataFrame(rows)
    if args.csv is not None:
        frame.to_csv(args.csv, index=False)
    frame["group"] = frame.dataset.map(group_of)
    for (setting, group_name), group in frame.groupby(["setting", "group"]):
        per_dataset = group.groupby("dataset")[["roc_auc", "average_precision"]].mean()
        print(f"{setting}, {group_name} sets: mean ROC-AUC {per_dataset.roc_auc.mean():.4f}, "
              f"mean AP {per_dataset.average_precision.mean():.4f}, median fit "
              f"{group.fit_s.median():.2f} s  {json.dumps(cfg)}")

if __name__ == "__main__":
    main()
