"""What the user asked for (`TrainOptions`), and what training will do (`TrainingPlan`).

`TrainOptions` is the user's: any of its open choices may be left as None, and training never
writes to it. `resolve_plan` reads it once, with the shape of the data, and returns a frozen
`TrainingPlan` in which every choice is concrete and checked: the steps of training read only
the plan. The defaults and the reasons for them are in training/defaults.py.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aeserve.artifact.card import MODEL_NAME_PATTERN, ScoreKind
from aeserve.training import defaults
from aeserve.training.calibration import ThresholdRule, parse_threshold_rule
from aeserve.training.column_checks import MIN_TRAINING_ROWS
from aeserve.training.model import VARIANTS, AutoencoderConfig
from aeserve.training.objectives import VariantOptions
from aeserve.training.preprocessing import ScalingKind
from aeserve.training.trainer import TrainConfig

#: Variants with no regularizer: only they can learn the identity through a wide enough stack.
UNREGULARIZED = ("ae",)

Calibration = Literal["cross-fit", "holdout"]

#: The scores computed from the reconstruction alone, which every variant can use.
RECONSTRUCTION_SCORES: tuple[str, ...] = ("residual_cauchy", "mse_scaled")


class OvercompleteWarning(UserWarning):
    """A hidden layer at least as wide as the input, with nothing to stop it copying the input."""


@dataclass(frozen=True)
class RaySettings:
    """`--engine ray`: `workers` training processes of one CPU each, on the Ray at `address`
    (or `RAY_ADDRESS`), else on a local Ray started with `num_cpus` (training/ray_train.py)."""

    workers: int = 2
    address: str | None = None
    num_cpus: int | None = None


@dataclass
class TrainOptions:
    """The user's choices. None (and an empty list or string) leaves a choice to the plan."""

    name: str
    #: AESERVE_MODELS_DIR when set, as for `aeserve serve`; else defaults.MODELS_DIR.
    models_dir: Path = field(default_factory=defaults.default_models_dir)
    variant: str = defaults.VARIANT
    hidden_sizes: list[int] | None = None  # None: defaults.default_hidden_sizes
    activation: str | None = None  # None: defaults.default_activation(variant)
    decoder_activation: str = defaults.DECODER_ACTIVATION
    tied_weights: bool = defaults.TIED_WEIGHTS
    members: int | None = None  # None: defaults.default_members(variant, tied_weights)
    #: None: cross-fit when the model has several members, else hold out
    #: defaults.VALIDATION_FRACTION.
    validation_fraction: float | None = None
    scaling: str | None = None  # None: defaults.default_scaling(decoder_activation)
    threshold_rule: str = defaults.THRESHOLD_RULE
    #: The reconstruction score; the VAE's `vae_score="elbo"` replaces it with the negative ELBO.
    score: str = defaults.SCORE
    description: str = defaults.DESCRIPTION
    #: "local" (this process) or "ray" (data-parallel on Ray Train, Parquet data only).
    engine: str = "local"
    ray: RaySettings = field(default_factory=RaySettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    variant_options: VariantOptions = field(default_factory=VariantOptions)
    command: str = field(default_factory=defaults.invoked_command)


@dataclass(frozen=True)
class TrainingPlan:
    """Every choice of one training run, concrete and checked; built by `resolve_plan`."""

    name: str
    models_dir: Path
    model: AutoencoderConfig
    scaling: ScalingKind
    calibration: Calibration
    #: The share of normal rows held out; None when cross-fitting (no row is held out).
    validation_fraction: float | None
    threshold_rule: ThresholdRule
    score_kind: ScoreKind
    train: TrainConfig
    variant_options: VariantOptions
    description: str
    command: str
    engine: str = "local"
    ray: RaySettings | None = None

    @property
    def cross_fit(self) -> bool:
        return self.calibration == "cross-fit"

    @property
    def model_dir(self) -> Path:
        """The model's folder in the repository, which holds one folder per version."""
        return self.models_dir / self.name


def resolve_plan(options: TrainOptions, n_features: int, n_normal_rows: int) -> TrainingPlan:
    """Turn every open choice of `options` into a concrete one, and check them all.

    Raises ValueError for a choice that cannot work; warns (`OvercompleteWarning`) when an
    explicit stack lets an unregularized model copy its input. `options` is only read.
    """
    if n_normal_rows < MIN_TRAINING_ROWS:
        raise ValueError(f"only {n_normal_rows} normal rows: training needs at least "
                         f"{MIN_TRAINING_ROWS} to fit, cross-fit and calibrate a threshold")
    if not MODEL_NAME_PATTERN.match(options.name):
        raise ValueError(f"invalid model name {options.name!r}: letters, digits, '.', '_', '-'")
    if options.engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {options.engine!r}: local or ray")
    if options.engine == "ray" and options.ray.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {options.ray.workers}")
    variant = options.variant
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    threshold_rule = parse_threshold_rule(options.threshold_rule)
    scaling = options.scaling or defaults.default_scaling(options.decoder_activation)
    if options.decoder_activation == "sigmoid" and scaling != "minmax":
        raise ValueError("the sigmoid decoder's cross-entropy needs inputs in [0, 1]: "
                         "use minmax scaling (the default for --decoder sigmoid)")
    members = (options.members if options.members is not None
               else defaults.default_members(variant, options.tied_weights))
    calibration, members = _calibration(options.validation_fraction, members, n_normal_rows)
    model = AutoencoderConfig(
        input_dim=n_features,
        hidden_sizes=options.hidden_sizes or defaults.default_hidden_sizes(n_features, variant),
        activation=options.activation or defaults.default_activation(variant),
        decoder_activation=options.decoder_activation,
        tied_weights=options.tied_weights,
        variant=variant,
        members=members,
    )
    if options.hidden_sizes:  # the default stack is the benchmark's choice, not a slip
        warn_if_overcomplete(model)
    validation_fraction = None
    if calibration == "holdout":
        validation_fraction = check_validation_fraction(
            options.validation_fraction if options.validation_fraction is not None
            else defaults.VALIDATION_FRACTION)
    if options.score not in RECONSTRUCTION_SCORES:
        raise ValueError(f"unknown score {options.score!r}; choose from "
                         f"{', '.join(RECONSTRUCTION_SCORES)}")
    score_kind: ScoreKind = ("neg_elbo_scaled" if variant == "vae"
                             and options.variant_options.vae_score == "elbo"
                             else options.score)  # type: ignore[assignment]
    return TrainingPlan(
        name=options.name,
        models_dir=Path(options.models_dir),
        model=model,
        scaling=scaling,
        calibration=calibration,
        validation_fraction=validation_fraction,
        threshold_rule=threshold_rule,
        score_kind=score_kind,
        train=options.train,  # frozen, like the variant options: safe to share
        variant_options=options.variant_options,
        description=options.description,
        command=options.command,
        engine=options.engine,
        ray=options.ray if options.engine == "ray" else None,
    )


def _calibration(validation_fraction: float | None, members: int,
                 n_normal_rows: int) -> tuple[Calibration, int]:
    """Cross-fit several members unless a held-out share is asked for; with fewer than two
    rows per member, as many members as there are pairs of rows (holdout for one)."""
    cross_fit = validation_fraction is None and members >= 2
    if cross_fit and n_normal_rows < 2 * members:  # too few rows for a fold per member
        members = max(1, n_normal_rows // 2)
        cross_fit = members >= 2
    return ("cross-fit" if cross_fit else "holdout"), members


def check_validation_fraction(fraction: float) -> float:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must lie in (0, 1), got {fraction}")
    return fraction


def warn_if_overcomplete(config: AutoencoderConfig) -> None:
    """Warn when an unregularized model has no layer narrower than its input.

    Only then can it pass the input through unchanged: one bottleneck narrower than the input
    is enough to force it to learn structure.
    """
    narrowest = min(config.hidden_sizes)
    if config.variant in UNREGULARIZED and narrowest >= config.input_dim:
        warnings.warn(
            f"no hidden layer is narrower than the input (narrowest {narrowest} units for "
            f"{config.input_dim} inputs) and there is no regularizer: "
            f"the model can learn the identity and reconstruct anomalies as well as normal rows; "
            f"use a narrower layer or a regularized variant (sparse-l1, sparse-kl, denoising, "
            f"contractive, vae)", OvercompleteWarning, stacklevel=3)
