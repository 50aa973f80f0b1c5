"""The model card: what a model version is and what its scores mean.

`model.json` sits next to `model.onnx` in `models/<name>/<version>/`. Training writes it; the
model store validates it before a version runs anywhere (server, batch scoring, evaluation). It
depends on pydantic alone.

The schema is versioned (`schema_version`); a reader refuses a card whose version it does not know
rather than guessing at its meaning.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aeserve.artifact.windows import window_feature_names

#: 2 added `reference` (the drift reference); a card of version 1 still reads, without it.
CARD_SCHEMA_VERSION = 2
#: 3 added `window`: only a windowed model's card is written as version 3, so that a reader
#: that knows version 2 refuses it rather than scoring single rows with it.
WINDOWED_CARD_SCHEMA_VERSION = 3
CARD_FILENAME = "model.json"
ONNX_FILENAME = "model.onnx"
INPUT_NAME = "x"
OUTPUT_NAMES = ("embedding", "reconstruction", "score", "feature_errors")
SCORE_QUANTILE_COUNT = 101

#: Model names are path components: letters, digits, '.', '_', '-', not starting with '.'.
#: `\Z`, not `$`: `$` also matches before a trailing newline, which a name must not hold.
MODEL_NAME_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Strict):
    """The network's shape, enough to rebuild it in torch for inspection or fine-tuning."""

    variant: str = Field(description="Autoencoder variant, e.g. 'ae'.")
    hidden_sizes: list[int] = Field(min_length=1, description="Encoder widths, outermost first.")
    activation: Literal["sigmoid", "relu", "tanh"]
    decoder_activation: Literal["identity", "sigmoid"]
    tied_weights: bool = False
    members: int = Field(1, ge=1, description="Networks of this shape side by side; the score "
                                              "is their mean, the embedding their codes joined.")
    embedding_dim: int = Field(gt=0)


class Preprocessing(_Strict):
    """Affine scaling folded into the ONNX graph: `z = (x - offset) / scale`."""

    kind: Literal["standard", "robust", "minmax"]
    offset: list[float]
    scale: list[float]

    @model_validator(mode="after")
    def _scale_positive(self) -> Preprocessing:
        if len(self.offset) != len(self.scale):
            raise ValueError("offset and scale must have the same length")
        if any(not s > 0 for s in self.scale):
            raise ValueError("every scale must be positive")
        return self


ScoreKind = Literal["residual_cauchy", "mse_scaled", "neg_elbo_scaled"]

SCORE_DESCRIPTIONS: dict[str, str] = {
    "residual_cauchy": "Mean over features of log(1 + e_j / s_j), e_j the squared reconstruction "
                       "error of feature j in the scaled feature space and s_j its median over "
                       "held-out normal rows (score.residual_scale): the negative log-likelihood "
                       "of the residuals under a Cauchy distribution with each feature's own "
                       "scale, up to constants. With several members, e_j is the mean of their "
                       "squared errors.",
    "mse_scaled": "Mean over features of the squared reconstruction error in the scaled "
                  "feature space.",
    "neg_elbo_scaled": "Negative ELBO at the mean code, divided by the number of features: "
                       "(sum of squared errors in the scaled space + beta * KL(q(z|x) || N(0, I)))"
                       " / d.",
}


class ScoreSpec(_Strict):
    kind: ScoreKind = "mse_scaled"
    description: str = SCORE_DESCRIPTIONS["mse_scaled"]
    residual_scale: list[float] | None = Field(
        None, description="residual_cauchy only: s_j, each feature's median squared "
                          "reconstruction error on held-out normal rows (scaled space).")

    @model_validator(mode="after")
    def _scale_matches_kind(self) -> ScoreSpec:
        if (self.kind == "residual_cauchy") != (self.residual_scale is not None):
            raise ValueError("score.residual_scale is given with the residual_cauchy score, "
                             "and only with it")
        if self.residual_scale is not None and not all(
                math.isfinite(s) and s > 0 for s in self.residual_scale):
            raise ValueError("score.residual_scale must hold positive finite numbers")
        return self


class TrainingSummary(_Strict):
    epochs_run: int
    best_epoch: int
    train_loss: float
    val_loss: float
    seed: int
    learning_rate: float
    batch_size: int
    rows_train: int
    rows_validation: int
    calibration: Literal["holdout", "cross-fit"] = Field(
        "holdout", description="holdout: a share of the normal rows is kept out of training and "
                               "scored; cross-fit: every normal row trains all members but one "
                               "and is scored by that one (see docs/architecture.md).")
    data_fingerprint: str = Field(description="sha256 of the feature names and the float32 "
                                              "feature matrix.")
    data_source: str = Field(description="File name of the training data (no directory).")
    label_column: str | None = Field(None, description="The 0/1 column kept out of the "
                                                       "features (1 = anomaly).")
    id_column: str | None = Field(None, description="The id column kept out of the features.")
    columns_dropped: list[str] = Field(
        default_factory=list, description="Other columns of the file left out of the features.")
    fit_s: float = Field(description="Seconds spent in the training loop.")
    duration_s: float = Field(description="Seconds for the whole run: training, export, checks.")
    engine: Literal["local", "ray"] = Field("local", description="Where the training loop ran: "
                                                               "this process, or Ray Train.")
    rows_per_s: float | None = Field(None, description="Training rows per second of the training "
                                                       "loop (each row once per epoch).")
    peak_rss_mb: float | None = Field(None, description="Peak resident memory of the training "
                                                        "process, in MiB.")
    command: str = Field(description="The command line that reproduces this model.")
    torch_version: str


class Evaluation(_Strict):
    """Detection quality on held-out normal rows plus the labelled anomalies."""

    rows_normal: int
    rows_anomalous: int
    roc_auc: float
    average_precision: float
    precision_at_threshold: float
    recall_at_threshold: float


class Bins(_Strict):
    """One column's reference bins (aeserve/artifact/drift.py): inner edges at its deciles and
    the share of the reference rows in each bin."""

    edges: list[float]
    shares: list[float]

    @model_validator(mode="after")
    def _shape(self) -> Bins:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError("a column's bins need one share more than edges")
        if not all(math.isfinite(v) for v in [*self.edges, *self.shares]):
            raise ValueError("bin edges and shares must be finite numbers")
        if any(b < a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("bin edges must be non-decreasing")
        if any(v < 0 for v in self.shares) or abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError("bin shares must be non-negative and add up to 1")
        return self


class Reference(_Strict):
    """What drift is measured against, so that serving needs no training data: each feature's
    bins over the normal training rows, and the held-out normal scores' bins."""

    rows: int = Field(gt=0, description="Normal rows the feature bins were computed from (a "
                                        "seeded sample of 2**19 values' worth of rows, at "
                                        "least 10,000, beyond that).")
    features: list[Bins]
    score: Bins


class Window(_Strict):
    """A windowed model's input (aeserve/artifact/windows.py): windows of `size` consecutive
    readings of one series, flattened oldest first. `feature_names` of the card are the
    flattened inputs' names; these are the readings' own."""

    size: int = Field(ge=2, description="Readings per window (W).")
    stride: int = Field(1, ge=1, description="Training took every stride-th window of a "
                                             "series; serving scores every window.")
    features: list[str] = Field(min_length=1, description="The readings' feature names (d).")
    series_column: str | None = Field(None, description="The column naming a row's series "
                                                        "(None: one series).")
    time_column: str | None = Field(None, description="The column rows were ordered by within "
                                                      "a series (None: file order).")


class ModelCard(_Strict):
    """Everything a server or a person needs to use and trust one model version."""

    schema_version: Literal[1, 2, 3] = CARD_SCHEMA_VERSION
    name: str
    version: int = Field(ge=1)
    created_at: datetime
    description: str = ""
    architecture: Architecture
    hyperparameters: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    input_dim: int = Field(gt=0)
    feature_names: list[str]
    preprocessing: Preprocessing
    score: ScoreSpec = ScoreSpec()
    threshold: float
    threshold_rule: str = Field(description="How the threshold was chosen, e.g. 'quantile:0.99'.")
    score_quantiles: list[float] = Field(
        description="Scores of held-out normal rows at the 0, 1, ..., 100th percentiles."
    )
    reference: Reference | None = Field(
        None, description="The drift reference (schema version 2; absent from older cards, "
                          "whose versions serve without drift).")
    window: Window | None = Field(
        None, description="Windowed models only (schema version 3): the graph reads windows of "
                          "consecutive readings, and a row's score is its window's.")
    training: TrainingSummary
    evaluation: Evaluation | None = None
    onnx_opset: int
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    external_data_sha256: dict[str, str] = Field(
        default_factory=dict,
        description="sha256 of each external-data file the graph reads, by its location "
                    "relative to the version folder (aeserve's exporter writes none).")
    parity_max_abs_error: float = Field(ge=0)
    parity_rows: int

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if not MODEL_NAME_PATTERN.match(self.name):
            raise ValueError(f"model name {self.name!r} is not a valid path component")
        if len(self.feature_names) != self.input_dim:
            raise ValueError(
                f"feature_names has {len(self.feature_names)} names for input_dim {self.input_dim}"
            )
        if len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError("feature_names must be unique")
        if len(self.preprocessing.offset) != self.input_dim:
            raise ValueError("preprocessing length does not match input_dim")
        if (self.score.residual_scale is not None
                and len(self.score.residual_scale) != self.input_dim):
            raise ValueError("score.residual_scale length does not match input_dim")
        if any(not re.fullmatch(r"[0-9a-f]{64}", v) for v in self.external_data_sha256.values()):
            raise ValueError("external_data_sha256 values must be sha256 hex digests")
        if not math.isfinite(self.threshold):
            raise ValueError(f"the threshold must be a finite number, got {self.threshold}")
        if not all(math.isfinite(q) for q in self.score_quantiles):
            raise ValueError("score_quantiles must be finite numbers")
        if len(self.score_quantiles) != SCORE_QUANTILE_COUNT:
            raise ValueError(f"score_quantiles must hold {SCORE_QUANTILE_COUNT} values")
        if any(b < a for a, b in zip(self.score_quantiles, self.score_quantiles[1:], strict=False)):
            raise ValueError("score_quantiles must be non-decreasing")
        if self.reference is not None and len(self.reference.features) != self.input_dim:
            raise ValueError("reference.features needs one entry per feature")
        if (self.window is not None) != (self.schema_version == WINDOWED_CARD_SCHEMA_VERSION):
            raise ValueError(f"a window is given in a card of schema version "
                             f"{WINDOWED_CARD_SCHEMA_VERSION}, and only there")
        if self.window is not None and self.feature_names != window_feature_names(
                self.window.features, self.window.size):
            raise ValueError("feature_names must be the window's flattened inputs "
                             "(name[t-k] ... name[t] for each step, oldest first)")
        return self

    @property
    def window_size(self) -> int:
        """Readings per window: the card's window, or 1 for a model of single rows."""
        return self.window.size if self.window is not None else 1

    @property
    def reading_features(self) -> list[str]:
        """The features of one reading: a windowed model's `window.features`, else the
        graph's inputs themselves."""
        return list(self.window.features if self.window is not None else self.feature_names)

    def to_json(self) -> str:
        # A row model's card says nothing of windows: it reads as the version 2 it is.
        exclude = {"window"} if self.window is None else None
        return self.model_dump_json(indent=2, exclude=exclude) + "\n"

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        return cls.model_validate_json(Path(path).read_bytes())


#: Keys of the exported graph's `metadata_props`: what a runtime other than aeserve needs to turn
#: the graph's `score` into a verdict and a percentile, without the card (values are strings:
#: numbers as Python writes them, lists as JSON).
GRAPH_METADATA_PREFIX = "aeserve."


def graph_metadata(threshold: float, threshold_rule: str, feature_names: list[str],
                   score_quantiles: list[float], score_kind: str,
                   schema_version: int = CARD_SCHEMA_VERSION) -> dict[str, str]:
    """The graph's copy of what the card says a score means (at export: the version number is
    given at publication, and a managed threshold in config.json overrides it at serving)."""
    import json

    return {f"{GRAPH_METADATA_PREFIX}{key}": value for key, value in {
        "card_schema_version": str(schema_version),
        "threshold": repr(float(threshold)),
        "threshold_rule": threshold_rule,
        "verdict": "anomalous when score > threshold",
        "feature_names": json.dumps(list(feature_names)),
        "score_kind": score_kind,
        "score_quantiles": json.dumps([float(q) for q in score_quantiles]),
    }.items()}


def file_sha256(path: Path) -> str:
    """The checksum recorded in the card as `onnx_sha256` and checked before a model serves."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
