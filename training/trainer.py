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
    epochs: int = 500
    batch_size: int = 64
    learning_rate: float = 1e-2
    patience: int = 20
    min_delta: float = 1e-5
    seed: int = 0
    progress: bool = True


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

    result = TrainResult(model=model)
    best_val = float("inf")
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stale_epochs = 0
    bar = tqdm(range(1, config.epochs + 1), desc="training", unit="epoch",
               disable=not config.progress, leave=False, mininterval=0.5)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = x_train[order[start:start + batch_size]]
            loss = per_sample_objective(model, batch, options, generator, training=True).mean()
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
