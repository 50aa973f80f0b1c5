"""The training loop: Adam on mini-batches, validation loss each epoch, early stopping.

Straight-line code on purpose. Determinism: one seeded `torch.Generator` drives initialisation and
shuffling, so two CPU runs with the same seed, data and thread count give identical weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from aeserve.training import defaults
from aeserve.training.model import Autoencoder, AutoencoderConfig
from aeserve.training.objectives import VariantOptions, per_sample_objective


@dataclass(frozen=True)
class TrainConfig:
    """The training loop's settings; every default, and why, is in training/defaults.py."""

    epochs: int = defaults.EPOCHS
    batch_size: int = defaults.BATCH_SIZE
    learning_rate: float = defaults.LEARNING_RATE
    patience: int = defaults.PATIENCE
    min_delta: float = defaults.MIN_DELTA
    seed: int = defaults.SEED
    progress: bool = defaults.PROGRESS
    #: Share of each batch's worst-reconstructed rows left out of the gradient (after warm-up).
    trim_fraction: float = defaults.TRIM_FRACTION
    trim_warmup_epochs: int = defaults.TRIM_WARMUP_EPOCHS
    #: When positive, cap the epochs so that training takes about this many gradient steps (but
    #: at least `min_epochs`).
    step_budget: int = defaults.STEP_BUDGET
    min_epochs: int = defaults.MIN_EPOCHS
    #: When positive, raise the epochs until training takes at least this many gradient steps.
    min_steps: int = defaults.MIN_STEPS
    #: Restore the weights of the epoch with the best validation loss (False: keep the last).
    restore_best: bool = defaults.RESTORE_BEST


@dataclass
class TrainResult:
    model: Autoencoder
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    best_epoch: int = 0
    duration_s: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.train_losses)


def _cross_fit_rows(folds: np.ndarray, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """([K, L] training rows, [K, V] validation rows) per member, equal lengths across members.

    Folds differ in size by at most one row, so a member with one row fewer to train on repeats
    one of its own rows to fill the batch grid; validation takes at most `CROSS_FIT_VAL_ROWS`
    rows of each fold.
    """
    members = int(folds.max()) + 1
    train = [torch.as_tensor(np.flatnonzero(folds != k)) for k in range(members)]
    val = [torch.as_tensor(np.flatnonzero(folds == k)) for k in range(members)]
    length = max(len(rows) for rows in train)
    padded = [torch.cat([rows, rows[torch.randint(len(rows), (length - len(rows),),
                                                  generator=generator)]])
              for rows in train]
    n_val = min(CROSS_FIT_VAL_ROWS, *(len(rows) for rows in val))
    return torch.stack(padded), torch.stack([rows[:n_val] for rows in val])


def trimmed_mean(losses: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the per-sample losses without the largest `fraction` of them."""
    keep = len(losses) - int(fraction * len(losses))
    if fraction <= 0 or keep >= len(losses) or keep < 1:
        return losses.mean()
    return torch.topk(losses, keep, largest=False, sorted=False).values.mean()


#: Rows per member in the cross-fitted validation loss, enough for a stable mean.
CROSS_FIT_VAL_ROWS = 1024


def fold_assignment(n_rows: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each row, 0..folds-1, in a seeded random order; fold sizes differ by at most 1."""
    if n_rows < 2 * folds:
        raise ValueError(f"cross-fitting {folds} members needs at least {2 * folds} rows, "
                         f"got {n_rows}")
    assignment = np.empty(n_rows, dtype=np.int64)
    assignment[np.random.default_rng(seed).permutation(n_rows)] = np.arange(n_rows) % folds
    return assignment


def train_autoencoder(
    Z_train: np.ndarray,
    Z_val: np.ndarray | None,
    model_config: AutoencoderConfig,
    config: TrainConfig,
    variant_options: VariantOptions | None = None,
    folds: np.ndarray | None = None,
) -> TrainResult:
    """Fit an autoencoder to scaled rows; keep the weights of the epoch with the best val loss.

    Early stopping ends training once the validation loss has not improved by `min_delta` for
    `patience` epochs; the returned model holds the best epoch's weights, not the last.

    Cross-fitting (`folds`, one fold per member, from `fold_assignment`): `Z_train` holds every
    row, member k trains on the rows outside fold k, and the validation loss is each member's
    loss on its own fold, which it never sees. Every row then trains all members but one, and
    has a held-out score from the one that never saw it. `Z_val` is unused.
    """
    if folds is not None:
        if len(folds) != len(Z_train) or set(np.unique(folds)) != set(
                range(model_config.members)) or model_config.members < 2:
            raise ValueError("cross-fitting needs one fold per member (2 or more), each row in "
                             "one fold")
    elif Z_val is None or len(Z_val) == 0:
        raise ValueError("training and validation sets must both be non-empty")
    if len(Z_train) == 0:
        raise ValueError("training and validation sets must both be non-empty")
    started = time.perf_counter()
    options = variant_options or VariantOptions()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = Autoencoder(model_config)
    # The fused kernel updates every parameter in one call: a quarter less time per step for
    # networks this small, whose steps are dominated by per-tensor overhead.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=True)
    x_train = torch.as_tensor(Z_train, dtype=torch.float32)
    members = model_config.members
    member_rows = None  # [K, L]: the rows each member trains on, when cross-fitting
    if folds is not None:
        member_rows, val_rows = _cross_fit_rows(folds, generator)
        x_val = x_train[val_rows]  # [K, V, d]: member k's own held-out rows
    else:
        x_val = torch.as_tensor(Z_val, dtype=torch.float32)
    n_rows = len(x_train) if member_rows is None else member_rows.shape[1]
    batch_size = max(1, min(config.batch_size, n_rows))

    epochs = config.epochs
    steps_per_epoch = -(-n_rows // batch_size)
    if config.step_budget > 0:
        epochs = min(epochs, max(config.min_epochs, -(-config.step_budget // steps_per_epoch)))
    if config.min_steps > 0:
        epochs = max(epochs, -(-config.min_steps // steps_per_epoch))
    result = TrainResult(model=model)
    best_val = float("inf")
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stale_epochs = 0
    bar = tqdm(range(1, epochs + 1), desc="training", unit="epoch",
               disable=not config.progress, leave=False, mininterval=0.5)
    for epoch in bar:
        model.train()
        # One shuffle per member: members differ in the order they see the rows, not only in
        # their initialisation. The batch is [K, B, d] then, [B, d] for a single network.
        if members == 1:
            order = torch.randperm(n_rows, generator=generator)
        else:
            order = torch.stack([torch.randperm(n_rows, generator=generator)
                                 for _ in range(members)])
            if member_rows is not None:
                order = member_rows.gather(1, order)
        total, seen = 0.0, 0
        for start in range(0, n_rows, batch_size):
            batch = x_train[order[..., start:start + batch_size]]
            losses = per_sample_objective(model, batch, options, generator, training=True)
            loss = trimmed_mean(losses.reshape(-1),
                                config.trim_fraction if epoch > config.trim_warmup_epochs
                                else 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.shape[-2]
            seen += batch.shape[-2]
        model.eval()
        # No torch.no_grad here: the contractive penalty differentiates the encoder.
        val_loss = per_sample_objective(model, x_val, options, generator,
                                        training=False).mean().item()
        result.train_losses.append(total / seen)
        result.val_losses.append(val_loss)
        bar.set_postfix(train=f"{total / seen:.4f}", val=f"{val_loss:.4f}")
        if val_loss < best_val - config.min_delta:
            best_val, result.best_epoch, stale_epochs = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale_epochs += 1
            if stale_epochs >= config.patience:
                break
    bar.close()
    if config.restore_best:
        model.load_state_dict(best_state)
    model.eval()
    result.duration_s = time.perf_counter() - started
    return result
