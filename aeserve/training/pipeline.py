"""From a dataset to a published model version: split, scale, train, export, calibrate, evaluate.

`train_and_export` is those steps in order, each a function below: resolve the plan (every
choice made concrete, training/plan.py) -> split the normal rows -> fit the scaler -> train ->
export ONNX and check parity -> calibrate the threshold -> evaluate -> the card -> publish.

Labelled anomalies (y = 1) never reach training; they join the held-out normal rows to evaluate the
model. Held-out normal scores serve twice: their mean loss is the early-stopping validation loss,
and their distribution calibrates the threshold. Early stopping reads only their mean loss, which
moves the 0.99 quantile of their scores very little.

Where they come from:
  cross-fit (the default for models of several members): the normal rows are dealt into one fold
      per member; member k trains on every fold but k. Each row thus trains all members but one,
      and its held-out score is that one member's. No row is withheld from the model: on the
      detection benchmark, withholding a fifth of the rows cost 0.015 of mean ROC-AUC.
  holdout (`validation_fraction`, and single networks): a random share of the normal rows is
      kept out of training.
A member's score varies more than the mean of all members, so the cross-fitted scores' upper
quantiles lie a little above those of the served score on new normal rows: the threshold errs
towards fewer false alarms.

The train-time evaluation (labelled data only) scores the same normal rows whatever the variant or
the number of members, so that cards of different models compare: a seeded fifth of the normal
rows (`EVALUATION_FRACTION`; the first rows of the permutation that a holdout split also starts
from). Cross-fit scores them out of fold; a holdout model holds them out (with `--val-fraction`
below 0.2 it holds out fewer rows, and is evaluated on those it held out).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from aeserve.artifact.card import (
    CARD_SCHEMA_VERSION,
    ONNX_FILENAME,
    SCORE_DESCRIPTIONS,
    WINDOWED_CARD_SCHEMA_VERSION,
    Architecture,
    Evaluation,
    ModelCard,
    Preprocessing,
    ScoreSpec,
    TrainingSummary,
    file_sha256,
    graph_metadata,
)
from aeserve.artifact.scores import verdicts
from aeserve.artifact.store import discard, publish, staging_dir
from aeserve.training.calibration import score_quantiles, threshold_from_rule
from aeserve.training.data import Dataset
from aeserve.training.export import (
    ONNX_OPSET,
    PARITY_ROWS,
    PARITY_TOLERANCE,
    ExportError,
    ScoringGraph,
    embed_metadata,
    make_session,
    parity_error,
    parity_rows,
    write_onnx,
)
from aeserve.training.plan import (
    OvercompleteWarning,
    TrainingPlan,
    TrainOptions,
    check_validation_fraction,
    resolve_plan,
)
from aeserve.training.preprocessing import AffineScaler, fit_scaler
from aeserve.training.reference import drift_reference
from aeserve.training.report import HISTORY_FILENAME, LOSS_PLOT_FILENAME, plot_losses, write_history
from aeserve.training.residual_scale import residual_scale
from aeserve.training.resources import peak_rss_mib
from aeserve.training.row_hash import below, folds_of, row_hashes
from aeserve.training.spill import SHUFFLE_BLOCK_ROWS, row_chunks
from aeserve.training.trainer import (
    TrainResult,
    fold_assignment,
    narrow_rows,
    train_autoencoder,
)

__all__ = [  # OvercompleteWarning, TrainOptions and resolve_plan live in training/plan.py
    "EVALUATION_FRACTION", "Outcome", "OvercompleteWarning", "TrainOptions", "TrainingPlan",
    "evaluate", "held_out_member_scores", "resolve_plan", "split_normal_rows", "train_and_export",
]


#: The share of the normal rows that the train-time evaluation scores (see the module docstring).
EVALUATION_FRACTION = 0.2
#: Rows per scoring run in calibration and evaluation: memory stays a few megabytes of
#: activations whatever the data's size.
SCORE_CHUNK_ROWS = 8192


@dataclass
class Outcome:
    card: ModelCard
    path: Path
    train_losses: list[float]
    val_losses: list[float]


@dataclass(frozen=True)
class Rows:
    """Which rows of the data train the model and which give its held-out scores, by number:
    the data itself is never copied (every step reads it in chunks)."""

    #: Row numbers of the normal rows that train.
    train: np.ndarray
    #: Row numbers of the normal rows that give held-out scores.
    validation: np.ndarray
    #: Cross-fit: each row's fold (`train` and `validation` are then both every normal row).
    folds: np.ndarray | None
    n_normal: int
    #: Positions in `validation` of the normal rows that the train-time evaluation scores.
    evaluation: np.ndarray


@dataclass(frozen=True)
class Exported:
    """The ONNX graph in the staging folder, a session on it, and its parity with torch."""

    path: Path
    session: ort.InferenceSession
    parity: float

    def scores(self, X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The served score of each row of `X` (or of its rows numbered `rows`): the exported
        graph's, by onnxruntime, `SCORE_CHUNK_ROWS` rows per run."""
        scores = np.empty(len(X) if rows is None else len(rows), dtype=np.float64)
        for start, stop, part in row_chunks(X, rows, SCORE_CHUNK_ROWS):
            scores[start:stop] = self.session.run(
                ["score"], {"x": np.ascontiguousarray(part, dtype=np.float32)})[0]
        return scores


def train_and_export(data: Dataset, options: TrainOptions) -> Outcome:
    """Train one model on `data` and publish it as the next version of `options.name`.

    `options` is only read: `resolve_plan` turns it into the plan that every step follows.
    """
    started = time.perf_counter()
    X = data.X
    normal, anomalies = by_label(data)
    plan = resolve_plan(options, n_features=X.shape[1], n_normal_rows=len(normal))
    rows = split_rows(normal, plan) if plan.engine == "local" else split_rows_by_hash(
        X, normal, plan)
    scaler = fit_scaler(X, plan.scaling, rows.train)
    result = (fit(plan, X, rows, scaler) if plan.engine == "local"
              else fit_on_ray_engine(plan, data, rows, scaler))
    scales = (residual_scale(result.model, X, rows.folds, rows=rows.validation, scaler=scaler,
                             seed=plan.train.seed)
              if plan.score_kind == "residual_cauchy" else None)
    graph = ScoringGraph(result.model, scaler, plan.score_kind, plan.variant_options.vae_beta,
                         residual_scale=scales)
    staging = staging_dir(plan.model_dir)
    try:
        exported = export_onnx(graph, scaler, X, plan.train.seed, staging)
        held_out, threshold = calibrate(plan, X, rows, graph, exported)
        evaluation = (evaluate(held_out[rows.evaluation], exported.scores(X, anomalies),
                               threshold)
                      if anomalies is not None and len(anomalies) else None)
        embed_metadata(exported.path, graph_metadata(
            threshold, str(plan.threshold_rule), data.feature_names,
            score_quantiles(held_out), plan.score_kind, schema_version=schema_version(data)))
        fields = card_fields(plan, data, rows, scaler, result, graph, exported, held_out,
                             threshold, evaluation, duration_s=time.perf_counter() - started)
        fields["reference"] = drift_reference(X, normal, held_out, plan.train.seed)
        write_history(staging, result.train_losses, result.val_losses, result.best_epoch)
        plot_losses(staging / HISTORY_FILENAME, staging / LOSS_PLOT_FILENAME)
        card = publish(staging, plan.model_dir, lambda version: ModelCard(
            version=version, created_at=datetime.now(UTC), **fields))
    except BaseException:
        discard(staging)
        raise
    return Outcome(card=card, path=plan.model_dir / str(card.version),
                   train_losses=result.train_losses, val_losses=result.val_losses)


def by_label(data: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """Row numbers of the normal rows, and of the labelled anomalies (None without labels):
    those never train."""
    if data.y is None:
        return narrow_rows(np.arange(len(data.X))), None
    return narrow_rows(np.flatnonzero(data.y == 0)), narrow_rows(np.flatnonzero(data.y == 1))


def split_normal_rows(n_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle normal-row indices and hold out `fraction` of them (at least one row each side)."""
    if n_rows < 2:
        raise ValueError(f"need at least 2 normal rows to train and validate, got {n_rows}")
    check_validation_fraction(fraction)
    order = np.random.default_rng(seed).permutation(n_rows)
    n_val = min(n_rows - 1, max(1, round(fraction * n_rows)))
    return order[n_val:], order[:n_val]


def split_rows(normal: np.ndarray, plan: TrainingPlan) -> Rows:
    """Cross-fit: every row trains, dealt into one fold per member. Holdout: a seeded share of
    the rows is kept out of training. `normal` holds the normal rows' numbers."""
    seed = plan.train.seed
    # The same seeded permutation as a holdout split: its first rows are the evaluation's.
    _, evaluation_idx = split_normal_rows(len(normal), EVALUATION_FRACTION, seed)
    if plan.cross_fit:
        folds = fold_assignment(len(normal), plan.model.members, seed)
        # a copy: the slice alone would keep the whole permutation (8 bytes a row) alive
        return Rows(train=normal, validation=normal, folds=folds, n_normal=len(normal),
                    evaluation=narrow_rows(evaluation_idx))
    train_idx, val_idx = split_normal_rows(len(normal), plan.validation_fraction, seed)
    # val_idx and evaluation_idx both start the permutation: the evaluation rows are the
    # first rows of `validation`, or all of them when fewer were held out.
    return Rows(train=normal[train_idx], validation=normal[val_idx], folds=None,
                n_normal=len(normal),
                evaluation=np.arange(min(len(evaluation_idx), len(val_idx))))


def split_rows_by_hash(X: np.ndarray, normal: np.ndarray, plan: TrainingPlan) -> Rows:
    """`split_rows` for `--engine ray`, whose workers see rows but not their numbers: folds and
    the holdout from a seeded hash of each row (training/row_hash.py). The evaluation's rows are
    those whose hash falls in the first `EVALUATION_FRACTION`, whatever the variant, as the
    permutation's first rows are for the local engine."""
    hashed = [_hash_chunk(part, plan) for _, _, part in row_chunks(X, normal, SCORE_CHUNK_ROWS)]
    folds = np.concatenate([f for f, _, _ in hashed]) if plan.cross_fit else None
    held = np.concatenate([h for _, h, _ in hashed])
    evaluated = np.concatenate([e for _, _, e in hashed])
    if plan.cross_fit:
        if len(np.unique(folds)) < plan.model.members:
            raise ValueError(f"{len(normal)} normal rows leave a cross-fitting fold empty")
        return Rows(train=normal, validation=normal, folds=folds, n_normal=len(normal),
                    evaluation=np.flatnonzero(evaluated))
    if held.all() or not held.any():
        raise ValueError(f"the holdout of {len(normal)} normal rows leaves one side empty")
    return Rows(train=normal[~held], validation=normal[held], folds=None, n_normal=len(normal),
                evaluation=np.flatnonzero(evaluated[held]))


def _hash_chunk(rows: np.ndarray,
                plan: TrainingPlan) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(folds, held out, evaluated) of some rows, from one hash of each."""
    hashes = row_hashes(rows, plan.train.seed)
    folds = folds_of(hashes, plan.model.members) if plan.cross_fit else None
    held = (below(hashes, plan.validation_fraction) if not plan.cross_fit
            else np.zeros(len(rows), dtype=bool))
    return folds, held, below(hashes, EVALUATION_FRACTION)


def fit_on_ray_engine(plan: TrainingPlan, data: Dataset, rows: Rows,
                      scaler: AffineScaler) -> TrainResult:
    """The training loop on Ray Train (training/ray_train.py), from the data's Parquet files."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise ValueError("--engine ray needs Ray: pip install 'aeserve[ray]'") from exc
    from aeserve.training.ray_train import fit_on_ray, validation_rows

    if not data.files:
        raise ValueError("--engine ray reads Parquet: give a .parquet file, a folder of them or "
                         "a glob")
    members = plan.model.members
    n_train = (rows.n_normal * (members - 1) // members if rows.folds is not None
               else len(rows.train))
    validation = validation_rows(data.X, rows.validation, rows.folds, members)
    return fit_on_ray(plan, list(data.files), data.feature_names, data.label_column, validation,
                      scaler, n_train, plan.ray, n_file_rows=len(data.X))


def fit(plan: TrainingPlan, X: np.ndarray, rows: Rows, scaler: AffineScaler) -> TrainResult:
    """Train the planned network on the rows of `X`, each batch scaled as it is read."""
    config = plan.train
    if isinstance(X, np.memmap) and not config.shuffle_block_rows:
        # spilled: shuffle a buffer of runs of rows at a time, so that reads stay sequential
        config = replace(config, shuffle_block_rows=SHUFFLE_BLOCK_ROWS)
    return train_autoencoder(X, None, plan.model, config, plan.variant_options,
                             folds=rows.folds, train_rows=rows.train,
                             val_rows=None if rows.folds is not None else rows.validation,
                             scaler=scaler)


def export_onnx(graph: ScoringGraph, scaler: AffineScaler, X: np.ndarray, seed: int,
                staging: Path) -> Exported:
    """Write the ONNX graph and check that onnxruntime agrees with torch on it (on rows like
    `X`, drawn with `seed`)."""
    path = staging / ONNX_FILENAME
    write_onnx(graph, X.shape[1], path)
    session = make_session(path)
    parity = parity_error(graph, session, parity_rows(X, seed), scaler.scale)
    if not parity <= PARITY_TOLERANCE:
        raise ExportError(f"ONNX parity error {parity:.3g} exceeds {PARITY_TOLERANCE:g}")
    return Exported(path=path, session=session, parity=parity)


def calibrate(plan: TrainingPlan, X: np.ndarray, rows: Rows, graph: ScoringGraph,
              exported: Exported) -> tuple[np.ndarray, float]:
    """The held-out normal scores, and the threshold the plan's rule puts on them."""
    if rows.folds is not None:
        held_out = held_out_member_scores(graph, X, rows.folds, rows.validation)
        fit_scores = held_out  # every normal row, each scored out of fold
    else:
        held_out = exported.scores(X, rows.validation)
        fit_scores = (np.concatenate([exported.scores(X, rows.train), held_out])
                      if plan.threshold_rule.kind == "contamination" else None)
    return held_out, threshold_from_rule(held_out, plan.threshold_rule, fit_scores)


def held_out_member_scores(graph: ScoringGraph, X: np.ndarray, folds: np.ndarray,
                           rows: np.ndarray | None = None) -> np.ndarray:
    """Each row's score by the one member that did not train on it (its fold's member); the
    rows of `X`, or those numbered `rows`, with `folds` one per row.

    The same score as the exported graph's, for one member instead of their mean; computed in
    torch, which the parity check ties to the graph, `SCORE_CHUNK_ROWS` rows at a time.
    """
    scores = np.empty(len(X) if rows is None else len(rows), dtype=np.float64)
    with torch.no_grad():
        for start, stop, part in row_chunks(X, rows, SCORE_CHUNK_ROWS):
            per_member = graph.member_scores(torch.as_tensor(part, dtype=torch.float32))
            scores[start:stop] = per_member[torch.as_tensor(folds[start:stop].astype(np.int64)),
                                            torch.arange(stop - start)].numpy()
    return scores


def evaluate(normal_scores: np.ndarray, anomaly_scores: np.ndarray, threshold: float) -> Evaluation:
    """ROC-AUC, average precision and precision/recall at the threshold (anomaly = positive)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from aeserve.training.evaluate import metrics_at

    y = np.concatenate([np.zeros(len(normal_scores), dtype=np.int64),
                        np.ones(len(anomaly_scores), dtype=np.int64)])
    s = np.concatenate([normal_scores, anomaly_scores])
    at_threshold = metrics_at(y, verdicts(s, threshold))
    return Evaluation(
        rows_normal=len(normal_scores),
        rows_anomalous=len(anomaly_scores),
        roc_auc=float(roc_auc_score(y, s)),
        average_precision=float(average_precision_score(y, s)),
        precision_at_threshold=at_threshold["precision"],
        recall_at_threshold=at_threshold["recall"],
    )


def schema_version(data: Dataset) -> int:
    """The card's schema version: 3 for a windowed model (its card says the window), so that a
    reader that knows only single rows refuses it; else 2."""
    return WINDOWED_CARD_SCHEMA_VERSION if data.window is not None else CARD_SCHEMA_VERSION


def card_fields(plan: TrainingPlan, data: Dataset, rows: Rows, scaler: AffineScaler,
                result: TrainResult, graph: ScoringGraph, exported: Exported,
                held_out: np.ndarray, threshold: float, evaluation: Evaluation | None,
                duration_s: float) -> dict[str, Any]:
    """Everything the model card says but its version and creation time."""
    model, train = plan.model, plan.train
    best = result.best_epoch - 1
    return dict(
        schema_version=schema_version(data),
        name=plan.name,
        description=plan.description,
        architecture=Architecture(
            variant=model.variant,
            hidden_sizes=list(model.hidden_sizes),
            activation=model.activation,
            decoder_activation=model.decoder_activation,
            tied_weights=model.tied_weights,
            members=model.members,
            embedding_dim=model.embedding_dim,
        ),
        hyperparameters={
            "epochs": train.epochs,
            "patience": train.patience,
            # the share actually held out, after rounding to whole rows
            "validation_fraction": (None if plan.cross_fit
                                    else len(rows.validation) / rows.n_normal),
            **plan.variant_options.relevant(model.variant),
        },
        input_dim=model.input_dim,
        feature_names=data.feature_names,
        preprocessing=Preprocessing(kind=scaler.kind, offset=scaler.offset.tolist(),
                                    scale=scaler.scale.tolist()),
        score=ScoreSpec(kind=plan.score_kind, description=SCORE_DESCRIPTIONS[plan.score_kind],
                        residual_scale=(graph.residual_scale.tolist()
                                        if plan.score_kind == "residual_cauchy" else None)),
        threshold=threshold,
        threshold_rule=str(plan.threshold_rule),
        score_quantiles=score_quantiles(held_out),
        training=TrainingSummary(
            epochs_run=result.epochs_run,
            best_epoch=result.best_epoch,
            train_loss=result.train_losses[best],
            val_loss=result.val_losses[best],
            seed=train.seed,
            learning_rate=train.learning_rate,
            batch_size=train.batch_size,
            rows_train=len(rows.train),
            rows_validation=len(rows.validation),
            calibration=plan.calibration,
            data_fingerprint=data.fingerprint(),
            data_source=data.source,
            label_column=data.label_column,
            id_column=data.id_column,
            columns_dropped=list(data.dropped_columns),
            fit_s=round(result.duration_s, 3),
            duration_s=round(duration_s, 3),
            engine=plan.engine,
            rows_per_s=round(result.rows_per_s, 1),
            peak_rss_mb=round(peak_rss_mib(), 1),
            command=plan.command,
            torch_version=torch.__version__,
        ),
        window=data.window,
        evaluation=evaluation,
        onnx_opset=ONNX_OPSET,
        onnx_sha256=file_sha256(exported.path),
        parity_max_abs_error=exported.parity,
        parity_rows=PARITY_ROWS,
    )
