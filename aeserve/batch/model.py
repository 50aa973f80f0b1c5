"""The model version a batch job scores with, and the scoring of one Arrow batch.

A version is loaded by the model store's `load_version` (card schema, sha256, graph contract, test
inference), the same check the server runs, so a model that would not serve does not score files
either. `BatchScorer.score` is
the one function both engines run: columns matched to the card's feature names by name, one
onnxruntime run, then the same verdicts and percentiles as the server's answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from aeserve.artifact.card import CARD_FILENAME, ONNX_FILENAME, ModelCard
from aeserve.artifact.errors import ModelLoadError
from aeserve.artifact.scores import p_values, verdicts
from aeserve.artifact.session import ModelSession, SessionConfig
from aeserve.artifact.store import LoadedVersion, load_version, version_folders
from aeserve.batch.quantiles import Percentiles

RESULT_COLUMNS = ("score", "is_anomaly", "percentile", "p_value")
#: Each row is scored at the position it would have in one run over the whole input, modulo this
#: many rows (see `BatchScorer.score`).
ALIGN_ROWS = 16


class ScoringError(ValueError):
    """The job cannot run or cannot go on (model, data or arguments); the message says why."""


#: One onnxruntime thread per run: parallelism comes from batches scored at once (local
#: workers, Ray actors), which keeps every core busy with small graphs too.
BATCH_SESSION = SessionConfig(provider="auto", intra_op_threads=1)


@dataclass(frozen=True)
class Skipped:
    """A newer version that failed to load, and why."""

    name: str
    version: int
    error: str


@dataclass(frozen=True)
class LoadedModel:
    """A ready model version, and the newer versions that failed to load (newest first)."""

    entry: LoadedVersion
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def card(self) -> ModelCard:
        return self.entry.card


def load_model(path: str | Path, config: SessionConfig = BATCH_SESSION) -> LoadedModel:
    """Load `models/NAME/VERSION`, or the newest version of `models/NAME` that loads.

    Like the server's default version policy, a corrupt newest version does not stop the job: the
    one below it scores, and the skipped versions are returned so that the caller can say so.
    """
    path = Path(path)
    if (path / CARD_FILENAME).exists() or (path / ONNX_FILENAME).exists():
        if not path.name.isdigit():
            raise ScoringError(f"{path} holds a model but is not a version folder "
                               f"(models/NAME/VERSION)")
        name, version = path.resolve().parent.name, int(path.name)
        try:
            return LoadedModel(load_version(name, version, path, config))
        except ModelLoadError as exc:
            raise ScoringError(f"model {name} version {version} cannot load: {exc}") from None
    if not path.is_dir():
        raise ScoringError(f"model folder not found: {path}")
    folders = version_folders(path)
    if not folders:
        raise ScoringError(f"{path} has no version folders (models/NAME/1, 2, ...)")
    skipped = []
    name = path.resolve().name
    for number in sorted(folders, reverse=True):
        try:
            return LoadedModel(load_version(name, number, folders[number], config), skipped)
        except ModelLoadError as exc:
            skipped.append(Skipped(name, number, str(exc)))
    reasons = "; ".join(f"version {v.version}: {v.error}" for v in skipped)
    raise ScoringError(f"no version of {path.name} loads ({reasons})")


def input_columns(features: Sequence[str], carried: Sequence[str]) -> list[str]:
    """The columns a job reads: the features, then each carried column (the id, the kept
    columns) that is not a feature, once."""
    return [*features, *[name for name in dict.fromkeys(carried) if name not in features]]



class BatchScorer:
    """Scores Arrow batches with one model version: inputs by name, results as an Arrow table.

    Output columns, in order: the id column and the kept columns (when named; one named like an
    output column is written as `NAME_input`), `score` (float32), `is_anomaly`
    (`score > threshold`), `percentile` (among held-out normal scores, 0 to 100, 3 decimals, as
    the server answers), `p_value` (as the server answers: it keeps ranking rows whose percentile
    reads 100), then for each of the `top_k` largest per-feature errors
    `top{i}_feature` (dictionary-encoded feature name) and `top{i}_error` (float32 squared error
    in the scaled space; their mean over all features is the score).
    """

    def __init__(self, card: ModelCard, session: ModelSession, *, top_k: int = 0,
                 id_column: str | None = None, keep_columns: Sequence[str] = ()) -> None:
        if not 0 <= top_k <= card.input_dim:
            raise ScoringError(f"--top-k must lie between 0 and the model's {card.input_dim} "
                               f"features, got {top_k}")
        self.card = card
        self.session = session
        self.top_k = top_k
        self.id_column = id_column
        #: The input columns copied to the output, by their output names (`carried_columns`).
        self.carried = carried_columns(id_column, keep_columns, top_k)
        self.outputs = ("score", "feature_errors") if top_k else ("score",)
        self._names = pa.array(card.feature_names, pa.string())
        self._percentiles = Percentiles(card.score_quantiles)

    @property
    def input_columns(self) -> list[str]:
        """The columns a reader must provide: the features, then the carried columns."""
        return input_columns(self.card.feature_names, list(self.carried))

    def check_columns(self, available: list[str], source: str) -> None:
        missing = [name for name in self.input_columns if name not in available]
        if missing:
            raise ScoringError(f"{source} lacks columns {missing} (the model's features are "
                               f"{self.card.feature_names}; the file has {available})")

    def features(self, batch: pa.RecordBatch | pa.Table, first_row: int = 0) -> np.ndarray:
        """The float32 matrix [N, d] in the card's feature order, every value checked finite."""
        return feature_matrix(batch, self.card.feature_names, first_row)

    def score(self, batch: pa.RecordBatch | pa.Table, first_row: int = 0) -> pa.Table:
        """Score one batch; `first_row` is the position of its first row in the whole input.

        onnxruntime's vectorised kernels (the logarithms, the mean over features) may round a
        value by its position in the buffer: a row that starts at another offset, or falls in
        the last, partial vector of a buffer, can score differently in the last bit. So a batch
        that starts at row `first_row` is run after `first_row % ALIGN_ROWS` copies of its first
        row and before as many copies of its last row as make the run a whole number of
        `ALIGN_ROWS`, all of which are then dropped: every row sits at the same offset of a
        buffer of whole vectors whatever the cut, and the results do not depend on how the input
        was cut into batches (batch size, CSV blocks, workers, Ray actors).
        """
        X = self.features(batch, first_row)
        n_rows = len(X)
        pad = first_row % ALIGN_ROWS if n_rows else 0
        tail = -(pad + n_rows) % ALIGN_ROWS if n_rows else 0
        if pad or tail:
            X = np.concatenate([np.repeat(X[:1], pad, axis=0), X,
                                np.repeat(X[-1:], tail, axis=0)])
        outputs = {name: values[pad:pad + n_rows]
                   for name, values in self.session.run(X, self.outputs).items()}
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            out_name: batch.column(name) for name, out_name in self.carried.items()}
        columns.update(result_columns(self.card, self._percentiles, self._names,
                                      outputs["score"], outputs.get("feature_errors"),
                                      self.top_k))
        return pa.table(columns)


def carried_columns(id_column: str | None, keep_columns: Sequence[str],
                    top_k: int) -> dict[str, str]:
    """The input columns copied to the output, first (the id, then the kept ones), each with
    its output name: its own, or `NAME_input` where the output has a column NAME (a label named
    is_anomaly keeps its values beside the model's verdict)."""
    reserved = {*RESULT_COLUMNS,
                *(f"top{i}_{kind}" for i in range(1, top_k + 1) for kind in ("feature", "error"))}
    carried = dict.fromkeys([*([id_column] if id_column else []), *keep_columns])
    return {name: f"{name}_input" if name in reserved else name for name in carried}


def feature_matrix(batch: pa.RecordBatch | pa.Table, names: Sequence[str],
                   first_row: int = 0) -> np.ndarray:
    """The float32 matrix [N, len(names)] of the named columns, every value present, numeric
    and finite, or the ScoringError naming the first that is not (`first_row`: the batch's
    first row in the whole input)."""
    X = np.empty((batch.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        column = batch.column(name)
        kind = column.type
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)
                or pa.types.is_boolean(kind)):
            raise ScoringError(f"column {name!r} is not numeric (type {kind})")
        if column.null_count:
            row = first_row + int(np.flatnonzero(column.is_null().to_numpy(
                zero_copy_only=False))[0])
            raise ScoringError(f"column {name!r} has a missing value in row {row} "
                               f"({column.null_count} in this batch)")
        with np.errstate(over="ignore"):  # beyond float32's range: inf, reported below
            X[:, j] = column.to_numpy(zero_copy_only=False)
    # A float64 sum of float32 values is finite exactly when every value is.
    if not np.isfinite(X.sum(dtype=np.float64)):
        bad = ~np.isfinite(X)
        row, col = map(int, np.argwhere(bad)[0])
        raise ScoringError(f"non-finite value in row {first_row + row}, column "
                           f"{names[col]!r} (values beyond float32's range count too)")
    return X


def result_columns(card: ModelCard, percentiles: Percentiles, feature_names: pa.Array,
                   scores: np.ndarray, errors: np.ndarray | None, top_k: int,
                   unscored: np.ndarray | None = None) -> dict[str, pa.Array]:
    """score, is_anomaly, percentile, p_value and the `top_k` features of each row (their
    names from `feature_names`, a string array), as the server answers them. `unscored` marks
    rows that have no score (a windowed model's readings before their series' first full
    window): their columns are null."""
    if unscored is not None:  # any value will do where the column is null
        scores = np.where(unscored, 0.0, scores).astype(np.float32)
    percentile = percentiles(scores)
    columns = {
        "score": pa.array(scores, pa.float32(), mask=unscored),
        "is_anomaly": pa.array(verdicts(scores, card.threshold), pa.bool_(), mask=unscored),
        "percentile": pa.array(percentile.round(3), pa.float64(), mask=unscored),
        "p_value": pa.array(p_values(scores, card.score_quantiles, percentile), pa.float64(),
                            mask=unscored),
    }
    if top_k:
        # Largest error first; a stable sort breaks ties by feature order, so every engine
        # and every batch split ranks alike.
        order = np.argsort(-errors, axis=1, kind="stable")[:, :top_k]
        top_errors = errors[np.arange(len(errors))[:, None], order]
        for i in range(top_k):
            columns[f"top{i + 1}_feature"] = pa.DictionaryArray.from_arrays(
                pa.array(order[:, i].astype(np.int32), mask=unscored), feature_names)
            columns[f"top{i + 1}_error"] = pa.array(top_errors[:, i], pa.float32(),
                                                    mask=unscored)
    return columns
