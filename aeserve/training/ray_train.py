"""`aeserve train --engine ray`: the training loop, data-parallel on Ray Train.

Only the loop moves: the driver reads the data as the local engine does (it calibrates, exports
and publishes through the same steps, training/pipeline.py), and hands the fit to Ray Train.
Each of `workers` processes reads its share of the Parquet files with Ray Data (shuffled locally,
seeded), trains an identical copy of the network, and averages its gradients with the others at
every step (`torch.distributed.all_reduce` over gloo, what DistributedDataParallel does, done by
hand because the objectives call the network's parts, not its `forward`). A worker sees rows,
not row numbers, so the cross-fitting folds and the holdout are a seeded hash of each row
(training/row_hash.py), which the driver uses too. Every worker computes the same validation
loss on the same rows, so early stopping decides alike everywhere; rank 0 returns the best
epoch's weights as the run's checkpoint.

The data files must be readable at the same path on every node (shared storage, object store
URIs through pyarrow), and the run's storage (`RAY_STORAGE`, else a local temporary folder) too
on a multi-node cluster. docs/scale.md says when to use it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aeserve.training.model import Autoencoder
from aeserve.training.objectives import per_sample_objective
from aeserve.training.plan import RaySettings, TrainingPlan
from aeserve.training.preprocessing import AffineScaler
from aeserve.training.row_hash import row_folds, row_held_out
from aeserve.training.trainer import CROSS_FIT_VAL_ROWS, VALIDATION_CHUNK, TrainResult

#: Rows each worker's Ray Data iterator shuffles among (seeded, new every epoch).
SHUFFLE_BUFFER_ROWS = 65_536
STATE_FILENAME = "model.pt"
HISTORY_FILENAME = "history.json"


def validation_rows(X: np.ndarray, rows: np.ndarray, folds: np.ndarray | None,
                    members: int) -> np.ndarray:
    """The rows every worker computes the validation loss on (raw): [K, V, d] with member k's
    first rows of fold k (cross-fit), or [V, d] of the held-out rows (holdout)."""
    if folds is None:
        return np.asarray(X[rows[:VALIDATION_CHUNK]], dtype=np.float32)
    own = [rows[folds == k] for k in range(members)]
    n_val = min(CROSS_FIT_VAL_ROWS, *(len(r) for r in own))
    return np.stack([np.asarray(X[r[:n_val]], dtype=np.float32) for r in own])


def fit_on_ray(plan: TrainingPlan, files: list[Path], feature_names: list[str],
               label_column: str | None, validation: np.ndarray, scaler: AffineScaler,
               n_train_rows: int, settings: RaySettings, n_file_rows: int | None = None
               ) -> TrainResult:
    """Train the planned network on Ray Train; the best epoch's weights, with the loss history.

    `validation` comes from `validation_rows`; `n_train_rows` (the rows one member trains on)
    sets the number of epochs exactly as the local engine's `min_steps` rule does. A worker's
    batch holds every kind of row of the files (`n_file_rows` of them): labelled anomalies,
    held-out rows and, for each member, its own fold are dropped from it after reading. So the
    batches read are larger than `batch_size` by the files' rows over a member's training rows,
    and each member's step then sees about `batch_size` rows, as it does on the local engine:
    the same steps per epoch, the same gradient noise.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    train = plan.train
    steps_per_epoch = max(1, math.ceil(n_train_rows / max(1, train.batch_size)))
    epochs = max(train.epochs, math.ceil(train.min_steps / steps_per_epoch))
    config = {
        "model": plan.model, "train": train, "variant_options": plan.variant_options,
        "epochs": epochs, "features": feature_names, "label": label_column,
        "cross_fit": plan.cross_fit, "members": plan.model.members,
        "validation_fraction": plan.validation_fraction,
        "offset": scaler.offset.astype(np.float32), "scale": scaler.scale.astype(np.float32),
        "validation": validation,
        "batch_per_worker": max(1, math.ceil(
            train.batch_size * max(n_file_rows or n_train_rows, n_train_rows)
            / max(1, n_train_rows) / settings.workers)),
    }
    started_ray = not ray.is_initialized()
    if started_ray:
        joining = settings.address is not None or "RAY_ADDRESS" in os.environ
        # A local Ray needs a CPU per worker and one more for Ray Data's reads, whatever the
        # machine has: Ray's CPUs are scheduling slots, and the workers wait on each other.
        cpus = max(settings.num_cpus or os.cpu_count() or 1, settings.workers + 1)
        ray.init(address=settings.address, num_cpus=None if joining else cpus,
                 include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    try:
        columns = feature_names + ([label_column] if label_column else [])
        # Read once into Ray's object store (which spills to disk beyond its memory): each
        # epoch then streams blocks from it instead of reading and decoding the files again.
        dataset = ray.data.read_parquet([str(f) for f in files], columns=columns).materialize()
        with tempfile.TemporaryDirectory(prefix="aeserve-ray-") as storage:
            trainer = TorchTrainer(
                _worker_loop, train_loop_config=config,
                scaling_config=ScalingConfig(num_workers=settings.workers, use_gpu=False,
                                             resources_per_worker={"CPU": 1}),
                run_config=RunConfig(storage_path=os.environ.get("RAY_STORAGE", storage),
                                     name="aeserve-train"),
                datasets={"train": dataset})
            outcome = trainer.fit()
            model = Autoencoder(plan.model)
            with outcome.checkpoint.as_directory() as folder:
                model.load_state_dict(torch.load(Path(folder) / STATE_FILENAME,
                                                 weights_only=True))
                history = json.loads((Path(folder) / HISTORY_FILENAME).read_text())
    finally:
        if started_ray:
            ray.shutdown()
    model.eval()
    result = TrainResult(model=model, train_losses=history["train_losses"],
                         val_losses=history["val_losses"], best_epoch=history["best_epoch"],
                         duration_s=time.perf_counter() - started)
    result.rows_per_s = n_train_rows * result.epochs_run / max(result.duration_s, 1e-9)
    return result


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: its shard of the rows, gradients averaged with the others."""
    import ray.train
    import torch.distributed as dist
    from ray.train import Checkpoint

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    train = config["train"]
    torch.set_num_threads(1)
    torch.manual_seed(train.seed)  # the same initial weights on every worker
    generator = torch.Generator().manual_seed(train.seed * 1_000 + rank)
    model = Autoencoder(config["model"])
    optimizer = torch.optim.Adam(model.parameters(), lr=train.learning_rate)
    offset, scale = config["offset"], config["scale"]
    validation = torch.from_numpy((config["validation"] - offset) / scale)
    shard = ray.train.get_dataset_shard("train")
    best_val, best_epoch, stale = math.inf, 0, 0
    train_losses: list[float] = []
    val_losses: list[float] = []
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for epoch in range(1, config["epochs"] + 1):
        model.train()
        total = torch.zeros(2, dtype=torch.float64)  # loss x rows, rows
        batches = iter(shard.iter_batches(
            batch_size=config["batch_per_worker"], batch_format="numpy",
            local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS,
            local_shuffle_seed=train.seed + epoch * world + rank))
        while True:
            batch = next(batches, None)
            running = torch.tensor([0.0 if batch is None else 1.0])
            dist.all_reduce(running, op=dist.ReduceOp.MIN)  # stop together: no lone all_reduce
            if running.item() == 0.0:
                break
            loss, rows = _batch_loss(model, batch, config, generator)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            _average_gradients(model, world)
            optimizer.step()
            total += torch.tensor([loss.item() * rows, rows], dtype=torch.float64)
        dist.all_reduce(total)
        model.eval()
        val_loss = per_sample_objective(model, validation, config["variant_options"], generator,
                                        training=False).mean().item()
        if val_loss < best_val - train.min_delta:
            best_val, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        last = stale >= train.patience or epoch == config["epochs"]
        train_losses.append(float(total[0] / max(total[1], 1.0)))
        val_losses.append(val_loss)
        metrics = {"epoch": epoch, "train_loss": train_losses[-1], "val_loss": val_loss,
                   "best_epoch": best_epoch}
        if last and rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(best_state if train.restore_best else model.state_dict(),
                           Path(folder) / STATE_FILENAME)
                (Path(folder) / HISTORY_FILENAME).write_text(json.dumps({
                    "train_losses": train_losses, "val_losses": val_losses,
                    "best_epoch": best_epoch if train.restore_best else epoch}))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)
        if last:
            break


def _batch_loss(model: Autoencoder, batch: dict, config: dict,
                generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """The mean objective of the batch's normal training rows (a zero that still has gradients
    when it has none: the worker must join the step's all_reduce all the same)."""
    x = np.column_stack([batch[name] for name in config["features"]]).astype(np.float32)
    if config["label"]:
        x = x[np.asarray(batch[config["label"]]) == 0]
    seed = config["train"].seed
    if not config["cross_fit"]:
        x = x[~row_held_out(x, config["validation_fraction"], seed)]
    if len(x) == 0:
        return sum(p.sum() for p in model.parameters()) * 0.0, 0
    z = torch.from_numpy((x - config["offset"]) / config["scale"])
    losses = per_sample_objective(model, z, config["variant_options"], generator, training=True)
    if not config["cross_fit"]:
        return losses.mean(), len(x)
    # Member k learns from the rows outside fold k only: [K, B] losses, masked.
    folds = torch.from_numpy(row_folds(x, config["members"], seed))
    trains = (folds[None, :] != torch.arange(config["members"])[:, None]).to(losses.dtype)
    return (losses * trains).sum() / trains.sum().clamp(min=1.0), len(x)


def _average_gradients(model: torch.nn.Module, world: int) -> None:
    """Every worker's gradients, averaged, in one all_reduce of one flat tensor."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = flat[offset:offset + g.numel()].view_as(g)
        offset += g.numel()


__all__ = ["RaySettings", "fit_on_ray", "validation_rows"]
