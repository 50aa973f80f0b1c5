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

from training.model import Autoencoder, AutoencoderConfig
from training.objectives import VariantOptions, per_sample_objective


@dataclass
class TrainConfig:
    # Chosen on the detection benchmark (bench/quality.py; docs/variants.md has the comparison).
    epochs: int = 80
    batch_size: int = 128
    learning_rate: float = 3e-3
    patience: int = 80
    min_delta: float = 1e-5
    seed: int = 0
    progress: bool = True
    #: Share of each batch's worst-reconstructed rows left out of the gradient (after warm-up):
    #: anomalies hidden in unlabelled training data then do not teach the model to rebuild them.
    trim_fraction: float = 0.0
    trim_warmup_epochs: int = 5
    #: When positive, cap the epochs so that training takes about this many gradient steps (but
    #: at least `min_epochs`): small data sets get every epoch, large ones do not pay for them.
    step_budget: int = 0
    min_epochs: int = 10
    #: When positive, raise the epochs until training takes at least this many gradient steps:
    #: a few hundred rows make one or two batches an epoch, too few updates in `epochs` epochs.
    min_steps: int = 1000


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


def trimmed_mean(losses: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the per-sample losses without the largest `fraction` of them."""
    keep = len(losses) - int(fraction * len(losses))
    if fraction <= 0 or keep >= len(losses) or keep < 1:
        return losses.mean()
    return torch.topk(losses, keep, largest=False, sorted=False).values.mean()


def train_autoencoder(
    Z_train: np.ndarray,
    Z_val: np.ndarray,
    model_config: AutoencoderConfig,
    config: TrainConfig,
    variant_options: VariantOptions | None = None,
) -> TrainResult:
    """Fit an autoencoder to scaled rows; keep the weights of the epoch with the best val loss.

    Early stopping ends training once the validation loss has not improved by `min_delta` for
    `patience` epochs; the returned model holds the best epoch's weights, not the last.
    """
    if len(Z_train) == 0 or len(Z_val) == 0:
        raise ValueError("training and validation sets must both be non-empty")
    started = time.perf_counter()
    options = variant_options or VariantOptions()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = Autoencoder(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    x_train = torch.as_tensor(Z_train, dtype=torch.float32)
    x_val = torch.as_tensor(Z_val, dtype=torch.float32)
    batch_size = max(1, min(config.batch_size, len(x_train)))

    epochs = config.epochs
    steps_per_epoch = -(-len(x_train) // batch_size)
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
        order = torch.randperm(len(x_train), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = x_train[order[start:start + batch_size]]
            losses = per_sample_objective(model, batch, options, generator, training=True)
            loss = trimmed_mean(losses, config.trim_fraction if epoch > config.trim_warmup_epochs
                                else 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
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
    model.load_state_dict(best_state)
    model.eval()
    result.duration_s = time.perf_counter() - started
    return result
