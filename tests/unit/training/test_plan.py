"""The training plan: every default resolved once, from one module, into a frozen plan."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest

from aeserve.training import defaults
from aeserve.training.calibration import ThresholdRule, parse_threshold_rule
from aeserve.training.objectives import VariantOptions
from aeserve.training.plan import (
    OvercompleteWarning,
    TrainingPlan,
    TrainOptions,
    resolve_plan,
)
from aeserve.training.trainer import TrainConfig


def plan(n_features: int = 6, n_normal_rows: int = 400, **options) -> TrainingPlan:
    return resolve_plan(TrainOptions(name="m", command="t", **options), n_features,
                        n_normal_rows)


def test_defaults_resolve_as_documented():
    resolved = plan()
    assert resolved.model.variant == defaults.VARIANT == "ae"
    assert resolved.model.hidden_sizes == defaults.HIDDEN_SIZES == (64, 32, 8)
    assert resolved.model.activation == defaults.ACTIVATION == "relu"
    assert resolved.model.decoder_activation == "identity" and not resolved.model.tied_weights
    assert resolved.model.members == defaults.MEMBERS == 5
    assert resolved.calibration == "cross-fit" and resolved.cross_fit
    assert resolved.validation_fraction is None
    assert resolved.scaling == "standard"
    assert resolved.score_kind == defaults.SCORE == "residual_cauchy"
    assert resolved.threshold_rule == ThresholdRule("quantile", 0.99)
    assert str(resolved.threshold_rule) == defaults.THRESHOLD_RULE
    assert resolved.model_dir == defaults.MODELS_DIR / "m"
    assert resolved.train == TrainConfig() and resolved.variant_options == VariantOptions()


@pytest.mark.parametrize("options", [
    {"tied_weights": True},
    {"variant": "vae"}, {"variant": "contractive"}, {"variant": "sparse-kl"},
    {"members": 1},
])
def test_single_networks_hold_out_the_default_share(options):
    resolved = plan(**options)
    assert resolved.model.members == 1
    assert resolved.calibration == "holdout"
    assert resolved.validation_fraction == defaults.VALIDATION_FRACTION == 0.2


def test_a_held_out_share_asked_for_keeps_the_members():
    resolved = plan(validation_fraction=0.25)
    assert (resolved.model.members, resolved.calibration) == (5, "holdout")
    assert resolved.validation_fraction == 0.25


def test_sparse_kl_gets_sigmoid_units_and_the_vae_elbo_its_score():
    assert plan(variant="sparse-kl").model.activation == "sigmoid"
    assert plan(variant="sparse-kl", activation="sigmoid").model.activation == "sigmoid"
    with pytest.raises(ValueError, match="sigmoid hidden units"):
        plan(variant="sparse-kl", activation="relu")
    assert plan(variant="vae").score_kind == "residual_cauchy"
    elbo = plan(variant="vae", variant_options=VariantOptions(vae_score="elbo"))
    assert elbo.score_kind == "neg_elbo_scaled"


def test_the_reconstruction_score_is_a_choice_and_a_typo_is_refused():
    assert plan(score="mse_scaled").score_kind == "mse_scaled"
    elbo = plan(variant="vae", score="mse_scaled",
                variant_options=VariantOptions(vae_score="elbo"))
    assert elbo.score_kind == "neg_elbo_scaled"
    with pytest.raises(ValueError, match="unknown score 'mse'"):
        plan(score="mse")


def test_scaling_follows_the_decoder():
    assert plan(decoder_activation="sigmoid").scaling == "minmax"
    assert plan(scaling="robust").scaling == "robust"
    with pytest.raises(ValueError, match="minmax"):
        plan(decoder_activation="sigmoid", scaling="standard")


@pytest.mark.parametrize(("rows", "asked", "members", "calibration"), [
    (10, None, 5, "cross-fit"), (12, 8, 6, "cross-fit"), (15, 8, 7, "cross-fit"),
])
def test_too_few_rows_for_a_fold_per_member_reduce_the_members(rows, asked, members,
                                                                calibration):
    resolved = plan(n_normal_rows=rows, **({} if asked is None else {"members": asked}))
    assert (resolved.model.members, resolved.calibration) == (members, calibration)


@pytest.mark.parametrize("rows", [0, 2, 9])
def test_fewer_rows_than_the_minimum_are_refused(rows):
    with pytest.raises(ValueError, match=f"only {rows} normal rows: training needs at least 10"):
        plan(n_normal_rows=rows)


@pytest.mark.parametrize(("options", "message"), [
    ({"name": "../escape"}, "invalid model name"),
    ({"variant": "gan"}, "unknown variant"),
    ({"threshold_rule": "median"}, "unknown threshold rule"),
    ({"validation_fraction": 1.0}, "validation fraction"),
    ({"members": 0}, "members must be at least 1"),
    ({"hidden_sizes": [4, 0]}, "hidden sizes"),
])
def test_invalid_choices_are_refused(options, message):
    options = {"name": "m", "command": "t", **options}
    with pytest.raises(ValueError, match=message):
        resolve_plan(TrainOptions(**options), 6, 400)


def test_only_an_explicit_overcomplete_stack_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error", OvercompleteWarning)
        plan(n_features=4)  # the default 64-32-8 stack is the benchmark's choice
        plan(n_features=4, variant="denoising", hidden_sizes=[8])  # regularized
    with pytest.warns(OvercompleteWarning, match="narrower than the input"):
        plan(n_features=4, hidden_sizes=[8])


def test_the_plan_is_frozen_all_through():
    resolved = plan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.model = None  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.model.members = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.train.epochs = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.variant_options.l1_weight = 1.0  # type: ignore[misc]
    assert isinstance(resolved.model.hidden_sizes, tuple)


def test_the_plan_keeps_no_reference_to_the_callers_lists():
    hidden = [16, 4]
    resolved = plan(hidden_sizes=hidden)
    hidden.append(2)
    assert resolved.model.hidden_sizes == (16, 4)


def test_resolving_leaves_the_options_untouched():
    options = TrainOptions(name="m", command="t", threshold_rule="quantile:0.990")
    before = copy.deepcopy(options)
    resolved = resolve_plan(options, 6, 400)
    assert options == before and dataclasses.asdict(options) == dataclasses.asdict(before)
    assert options.threshold_rule == "quantile:0.990"  # the card gets the plan's spelling
    assert str(resolved.threshold_rule) == "quantile:0.99"


def test_training_leaves_the_options_untouched(tmp_path):
    from aeserve.training.data import Dataset
    from aeserve.training.pipeline import train_and_export

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2)) @ rng.normal(size=(2, 4))
    options = TrainOptions(name="m", models_dir=tmp_path, threshold_rule="quantile:0.990",
                           command="t", train=TrainConfig(epochs=2, min_steps=0, progress=False))
    before = copy.deepcopy(options)
    outcome = train_and_export(
        Dataset(X=X, y=None, feature_names=[f"f{i}" for i in range(4)], source="t"), options)
    assert dataclasses.asdict(options) == dataclasses.asdict(before)
    assert outcome.card.threshold_rule == "quantile:0.99"
    assert outcome.card.architecture.hidden_sizes == list(defaults.HIDDEN_SIZES)


def test_threshold_rules_are_written_back_without_rounding():
    assert str(parse_threshold_rule("sigma:3")) == "sigma:3"
    assert str(parse_threshold_rule("contamination:0.050")) == "contamination:0.05"
    rule = parse_threshold_rule("quantile:0.9999999")
    assert str(rule) == "quantile:0.9999999" and parse_threshold_rule(str(rule)) == rule


def test_the_option_dataclasses_take_their_defaults_from_one_module():
    train, variant = TrainConfig(), VariantOptions()
    assert (train.epochs, train.batch_size, train.learning_rate, train.patience, train.min_steps,
            train.seed) == (defaults.EPOCHS, defaults.BATCH_SIZE, defaults.LEARNING_RATE,
                            defaults.PATIENCE, defaults.MIN_STEPS, defaults.SEED)
    assert (variant.l1_weight, variant.noise_level, variant.vae_score) == (
        defaults.L1_WEIGHT, defaults.NOISE_LEVEL, defaults.VAE_SCORE)
    options = TrainOptions(name="m")
    assert (options.models_dir, options.variant, options.threshold_rule) == (
        defaults.MODELS_DIR, defaults.VARIANT, defaults.THRESHOLD_RULE)


def test_the_cli_leaves_unset_options_to_the_plan():
    from aeserve.training.cli import build_parser, train_options

    args = build_parser().parse_args(["train", "--data", "x.csv", "--name", "m"])
    unset = ("variant", "hidden", "activation", "decoder", "tied", "members", "epochs",
             "batch_size", "lr", "min_steps", "patience", "val_fraction", "threshold", "seed",
             "models_dir", "description", "l1", "sparsity_target", "sparsity_weight", "noise",
             "noise_level", "contraction", "beta", "vae_score", "label_column")
    assert {name: getattr(args, name) for name in unset} == dict.fromkeys(unset)
    options = train_options(args)
    assert dataclasses.replace(options, command="t") == TrainOptions(name="m", command="t")


def test_train_writes_where_serve_reads(monkeypatch, tmp_path):
    from aeserve.training.cli import build_parser, train_options

    monkeypatch.delenv("AESERVE_MODELS_DIR", raising=False)
    assert TrainOptions(name="m").models_dir == Path("models")
    monkeypatch.setenv("AESERVE_MODELS_DIR", str(tmp_path))
    args = build_parser().parse_args(["train", "--data", "x.csv", "--name", "m"])
    assert train_options(args).models_dir == tmp_path
    args = build_parser().parse_args(["train", "--data", "x.csv", "--name", "m",
                                      "--models-dir", "elsewhere"])
    assert train_options(args).models_dir == Path("elsewhere")


def test_the_cli_passes_what_is_set():
    from aeserve.training.cli import build_parser, train_options

    args = build_parser().parse_args([
        "train", "--data", "x.csv", "--name", "m", "--epochs", "7", "--tied", "--quiet",
        "--members", "1", "--noise", "masking", "--threshold", "sigma:3"])
    options = train_options(args)
    assert options.train == TrainConfig(epochs=7, progress=False)
    assert options.tied_weights and options.members == 1
    assert options.variant_options == VariantOptions(noise="masking")
    assert options.threshold_rule == "sigma:3"


def test_the_cli_help_shows_the_defaults(capsys):
    from aeserve.training.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"training epochs (default: {defaults.EPOCHS})" in text
    assert f"(default: {defaults.THRESHOLD_RULE})" in text
    assert f"(default: {' '.join(map(str, defaults.HIDDEN_SIZES))})" in text
    assert ("(default: $AESERVE_MODELS_DIR when set, as for aeserve serve; else "
            f"{defaults.MODELS_DIR})") in text
