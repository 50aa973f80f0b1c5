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

from aeserve.training import defaults, spill
from aeserve.training.model import Autoencoder, AutoencoderConfig
from aeserve.training.objectives import VariantOptions, per_sample_objective
from aeserve.training.preprocessing import AffineScaler
from aeserve.training.resources import peak_rss_mib


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
    #: When positive, shuffle the rows a buffer of this many at a time, each buffer made of
    #: `SEGMENTS_PER_BUFFER` runs of consecutive rows from random places, instead of all rows at
    #: once: reads of a spilled data set stay sequential (training/spill.py). 0: one shuffle of
    #: every row.
    shuffle_block_rows: int = 0


@dataclass
class TrainResult:
    model: Autoencoder
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    best_epoch: int = 0
    duration_s: float = 0.0
    #: Training rows per second over the run (each row counted once per epoch).
    rows_per_s: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.train_losses)


class MemberRows:
    """[K, L] the rows each member trains on (all rows but its fold's), one member at a time.

    Only the folds (a byte per row) and each member's few padding rows are held; member k's rows
    are found again when its epoch order is drawn, where a [K, L] grid would hold four bytes per
    row and member for the whole run (on 20M rows, 400 MB).
    """

    def __init__(self, folds: np.ndarray, pads: list[torch.Tensor],
                 numbers: torch.Tensor | None, dtype: torch.dtype) -> None:
        self.folds = folds
        self.pads = pads
        self.numbers = numbers
        self.dtype = dtype
        self.shape = (len(pads), int((folds != 0).sum()) + len(pads[0]))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, k: int) -> torch.Tensor:
        """Member k's rows, written a chunk of folds at a time into the one array returned:
        no int64 copy of them exists at any time."""
        pad = self.pads[k]
        rows = torch.empty(self.shape[1], dtype=self.dtype)
        filled = 0
        for start in range(0, len(self.folds), MEMBER_ROWS_CHUNK):
            found = torch.from_numpy(
                np.flatnonzero(self.folds[start:start + MEMBER_ROWS_CHUNK] != k) + start)
            end = filled + len(found)
            if self.numbers is None:
                rows[filled:end] = found
            else:
                torch.index_select(self.numbers, 0, found, out=rows[filled:end])
            filled = end
        rows[filled:] = pad if self.numbers is None else self.numbers[pad]
        return rows


#: Folds scanned at a time when a member's rows are found again.
MEMBER_ROWS_CHUNK = 1 << 20


def _cross_fit_rows(folds: np.ndarray, generator: torch.Generator,
                    numbers: torch.Tensor | None = None) -> tuple[MemberRows, torch.Tensor]:
    """(each member's training rows, [K, V] validation rows), equal lengths across members;
    with `numbers`, positions among them are mapped to their row numbers.

    Folds differ in size by at most one row, so a member with one row fewer to train on repeats
    one of its own rows to fill the batch grid; validation takes at most `CROSS_FIT_VAL_ROWS`
    rows of each fold. Row numbers are int32 below 2**31 rows: half the memory.
    """
    members = int(folds.max()) + 1
    dtype = torch.int32 if len(folds) < 2**31 else torch.int64
    sizes = len(folds) - np.bincount(folds, minlength=members)  # each member's training rows
    length = int(sizes.max())
    pads, val = [], []
    for k in range(members):
        picks = torch.randint(int(sizes[k]), (length - int(sizes[k]),), generator=generator)
        pads.append(torch.as_tensor(_matching_rows(folds, k, False, picks.numpy())).to(dtype))
        val.append(torch.as_tensor(_matching_rows(
            folds, k, True, np.arange(min(CROSS_FIT_VAL_ROWS, len(folds) - int(sizes[k]))))))
    n_val = min(CROSS_FIT_VAL_ROWS, *(len(rows) for rows in val))
    fold_val = torch.stack([rows[:n_val] for rows in val])
    return (MemberRows(folds, pads, numbers, dtype),
            fold_val if numbers is None else numbers[fold_val])


def _matching_rows(folds: np.ndarray, k: int, in_fold: bool, ordinals: np.ndarray) -> np.ndarray:
    """The rows that are the `ordinals`-th (sorted, 0-based) of those in fold k (`in_fold`) or
    outside it, found a chunk of folds at a time: as `np.flatnonzero(...)[ordinals]`, without
    an int64 array of every match."""
    found = np.empty(len(ordinals), dtype=np.int64)
    order = np.argsort(ordinals, kind="stable")
    wanted, seen, next_ = np.asarray(ordinals)[order], 0, 0
    for start in range(0, len(folds), MEMBER_ROWS_CHUNK):
        if next_ == len(wanted):
            break
        chunk = folds[start:start + MEMBER_ROWS_CHUNK]
        matches = np.flatnonzero((chunk == k) if in_fold else (chunk != k))
        inside = wanted[next_:] < seen + len(matches)
        take = int(np.count_nonzero(inside))
        found[order[next_:next_ + take]] = matches[wanted[next_:next_ + take] - seen] + start
        next_ += take
        seen += len(matches)
    return found


def trimmed_mean(losses: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the per-sample losses without the largest `fraction` of them."""
    keep = len(losses) - int(fraction * len(losses))
    if fraction <= 0 or keep >= len(losses) or keep < 1:
        return losses.mean()
    return torch.topk(losses, keep, largest=False, sorted=False).values.mean()


#: Rows per member in the cross-fitted validation loss, enough for a stable mean.
CROSS_FIT_VAL_ROWS = 1024

#: Held-out rows per forward pass of the validation loss: its activations stay a few megabytes
#: whatever the number of held-out rows.
VALIDATION_CHUNK = 65_536


def narrow_rows(rows: np.ndarray) -> np.ndarray:
    """Row numbers as int32 where they fit: the index arrays of a large data set are half the
    size, and torch indexes with either."""
    rows = np.asarray(rows)
    if len(rows) and rows.max() < 2**31:
        return rows.astype(np.int32, copy=False)
    return rows.astype(np.int64, copy=False)


def row_reader(Z: np.ndarray, scaler: AffineScaler | None):
    """`take(rows)`: the rows of `Z` as float32, scaled by `scaler` if given. Never copies `Z`
    when it is float32 already: only the rows taken are scaled, one batch at a time."""
    x = torch.as_tensor(np.ascontiguousarray(Z, dtype=np.float32))
    if scaler is None:
        return lambda rows: x[rows]
    offset = torch.as_tensor(scaler.offset, dtype=torch.float32)
    scale = torch.as_tensor(scaler.scale, dtype=torch.float32)
    return lambda rows: (x[rows] - offset) / scale


def _epoch_order(n_rows: int, members: int, member_rows: MemberRows | torch.Tensor | None,
                 numbers: torch.Tensor | None, generator: torch.Generator,
                 block_rows: int = 0) -> torch.Tensor:
    """One epoch's row order: [n_rows] for one network, [K, n_rows] for members, one shuffle
    per member. Members differ in the order they see the rows, not only in their initialisation.

    Built in int32 (the same permutations torch draws in int64) one member at a time: the order
    of a large data set costs four bytes per row and member. With `block_rows`, rows are
    shuffled a buffer of that many at a time, each buffer made of runs of consecutive rows
    (`_block_order`), so that reading a spilled data set stays sequential.
    """
    if 0 < block_rows < n_rows:
        return _block_order(n_rows, members, member_rows, numbers, generator, block_rows)
    if members == 1:
        order = torch.randperm(n_rows, generator=generator, dtype=torch.int32)
        return order if numbers is None else numbers[order]
    grid = torch.empty((members, n_rows), dtype=_order_dtype(member_rows, numbers))
    for k in range(members):
        order = torch.randperm(n_rows, generator=generator, dtype=torch.int32)
        if member_rows is not None:  # into the grid: no temporary of the gathered rows
            torch.index_select(member_rows[k], 0, order, out=grid[k])
        else:
            grid[k] = order if numbers is None else numbers[order]
    return grid


def _order_dtype(member_rows: MemberRows | torch.Tensor | None,
                 numbers: torch.Tensor | None) -> torch.dtype:
    """The row numbers' own type (int64 only for data of 2**31 rows or more)."""
    for rows in (member_rows, numbers):
        if rows is not None:
            return rows.dtype
    return torch.int32


#: Segments (runs of consecutive rows) that one shuffle buffer of a spilled data set mixes.
SEGMENTS_PER_BUFFER = 64


def _block_order(n_rows: int, members: int, member_rows: MemberRows | torch.Tensor | None,
                 numbers: torch.Tensor | None, generator: torch.Generator,
                 block_rows: int) -> torch.Tensor:
    """`_epoch_order` a shuffle buffer at a time (see there).

    The training rows are cut into segments of `block_rows // SEGMENTS_PER_BUFFER` consecutive
    rows, the segments come in a seeded random order, and each run of `SEGMENTS_PER_BUFFER` of
    them is one buffer, whose rows are shuffled together (for each member). A batch then mixes
    rows from that many places of the file, not from one stretch of it (rows written in time
    order would otherwise train a stretch of time at once), while every read is still a
    sequential run of a segment's rows.
    """
    segment = max(1, block_rows // SEGMENTS_PER_BUFFER)
    segments = torch.randperm(-(-n_rows // segment), generator=generator).tolist()
    grid = torch.empty((members, n_rows), dtype=_order_dtype(member_rows, numbers))
    per_buffer = max(1, block_rows // segment)
    buffers = [torch.cat([torch.arange(s * segment, min(n_rows, (s + 1) * segment),
                                       dtype=torch.int32)
                          for s in segments[first:first + per_buffer]])
               for first in range(0, len(segments), per_buffer)]
    for k in range(members):  # a member's rows are found once per epoch (MemberRows)
        rows = member_rows[k] if member_rows is not None else numbers
        filled = 0
        for buffer in buffers:
            size = len(buffer)
            positions = buffer[torch.randperm(size, generator=generator, dtype=torch.int32)]
            grid[k, filled:filled + size] = positions if rows is None else rows[positions]
            filled += size
    return grid[0] if members == 1 else grid


def _validation_loss(model: Autoencoder, take, chunks: list, options: VariantOptions,
                     generator: torch.Generator) -> float:
    """Mean per-row objective over the held-out rows, read and scaled a chunk at a time."""
    if len(chunks) == 1:
        return per_sample_objective(model, take(chunks[0]), options, generator,
                                    training=False).mean().item()
    total, count = 0.0, 0
    for chunk in chunks:
        losses = per_sample_objective(model, take(chunk), options, generator, training=False)
        total += losses.double().sum().item()
        count += losses.numel()
    return total / count


def fold_assignment(n_rows: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each row, 0..folds-1, in a seeded random order; fold sizes differ by at most 1."""
    if n_rows < 2 * folds:
        raise ValueError(f"cross-fitting {folds} members needs at least {2 * folds} rows, "
                         f"got {n_rows}")
    assignment = np.empty(n_rows, dtype=np.int8 if folds < 128 else np.int64)
    assignment[np.random.default_rng(seed).permutation(n_rows)] = np.arange(n_rows) % folds
    return assignment


def train_autoencoder(
    Z_train: np.ndarray,
    Z_val: np.ndarray | None,
    model_config: AutoencoderConfig,
    config: TrainConfig,
    variant_options: VariantOptions | None = None,
    folds: np.ndarray | None = None,
    *,
    train_rows: np.ndarray | None = None,
    val_rows: np.ndarray | None = None,
    scaler: AffineScaler | None = None,
) -> TrainResult:
    """Fit an autoencoder to scaled rows; keep the weights of the epoch with the best val loss.

    Early stopping ends training once the validation loss has not improved by `min_delta` for
    `patience` epochs; the returned model holds the best epoch's weights, not the last.

    Cross-fitting (`folds`, one fold per member, from `fold_assignment`): `Z_train` holds every
    row, member k trains on the rows outside fold k, and the validation loss is each member's
    loss on its own fold, which it never sees. Every row then trains all members but one, and
    has a held-out score from the one that never saw it. `Z_val` is unused.

    Without a scaled copy of the data (what `aeserve train` does, so that training holds the
    data once, as float32): `Z_train` is every raw row, `train_rows` the row numbers that train
    (`folds` then has one entry per train row), `val_rows` those that validate (`Z_val` is
    None), and `scaler` scales each batch as it is taken.
    """
    n_train = len(Z_train) if train_rows is None else len(train_rows)
    if folds is not None:
        if len(folds) != n_train or set(np.unique(folds)) != set(
                range(model_config.members)) or model_config.members < 2:
            raise ValueError("cross-fitting needs one fold per member (2 or more), each row in "
                             "one fold")
    elif (Z_val is None or len(Z_val) == 0) and (val_rows is None or len(val_rows) == 0):
        raise ValueError("training and validation sets must both be non-empty")
    if n_train == 0:
        raise ValueError("training and validation sets must both be non-empty")
    started = time.perf_counter()
    options = variant_options or VariantOptions()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = Autoencoder(model_config)
    # The fused kernel updates every parameter in one call: a quarter less time per step for
    # networks this small, whose steps are dominated by per-tensor overhead.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=True)
    take = row_reader(Z_train, scaler)
    numbers = None if train_rows is None else torch.as_tensor(narrow_rows(train_rows))
    members = model_config.members
    member_rows = None  # [K, L]: the rows each member trains on, when cross-fitting
    if folds is not None:
        # positions among the train rows, mapped to rows of Z_train when `numbers` is given
        member_rows, fold_val_rows = _cross_fit_rows(folds, generator, numbers)
        # [K, V, d]: member k's own held-out rows
        validate, val_chunks = take, [fold_val_rows]
    elif val_rows is not None:
        validate = take
        val_chunks = [torch.as_tensor(narrow_rows(val_rows[start:start + VALIDATION_CHUNK]))
                      for start in range(0, len(val_rows), VALIDATION_CHUNK)]
    else:
        validate, val_chunks = row_reader(Z_val, scaler), [slice(None)]
    n_rows = n_train if member_rows is None else member_rows.shape[1]
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
    # Counted in rows, so that the rate is rows per second and the ETA moves within an epoch
    # (an epoch of a large data set takes minutes); the postfix says which epoch, the losses and
    # the peak memory. Early stopping can end the run before the bar's total.
    bar = tqdm(total=epochs * n_rows, desc="training", unit="row", unit_scale=True,
               disable=not config.progress, leave=False, mininterval=0.5)
    for epoch in range(1, epochs + 1):
        model.train()
        # One shuffle per member: members differ in the order they see the rows, not only in
        # their initialisation. The batch is [K, B, d] then, [B, d] for a single network.
        order = None  # the last epoch's order goes before the next one is drawn
        order = _epoch_order(n_rows, members, member_rows, numbers, generator,
                             config.shuffle_block_rows)
        total, seen = 0.0, 0
        for step, start in enumerate(range(0, n_rows, batch_size)):
            if config.shuffle_block_rows and step % max(
                    1, config.shuffle_block_rows // batch_size) == 0:
                spill.release(Z_train)  # the pages of the blocks already read
            batch = take(order[..., start:start + batch_size])
            losses = per_sample_objective(model, batch, options, generator, training=True)
            loss = trimmed_mean(losses.reshape(-1),
                                config.trim_fraction if epoch > config.trim_warmup_epochs
                                else 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.shape[-2]
            seen += batch.shape[-2]
            bar.update(batch.shape[-2])
        model.eval()
        # No torch.no_grad here: the contractive penalty differentiates the encoder.
        val_loss = _validation_loss(model, validate, val_chunks, options, generator)
        result.train_losses.append(total / seen)
        result.val_losses.append(val_loss)
        bar.set_postfix(epoch=f"{epoch}/{epochs}", train=f"{total / seen:.4f}",
                        val=f"{val_loss:.4f}", peak=f"{peak_rss_mib():,.0f} MiB", refresh=False)
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
    result.rows_per_s = n_rows * result.epochs_run / max(result.duration_s, 1e-9)
    return result
