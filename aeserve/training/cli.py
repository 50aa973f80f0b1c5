"""`aeserve train`: train an autoencoder on a data file and publish it to the model repository."""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

from aeserve.training import defaults
from aeserve.training.calibration import parse_threshold_rule
from aeserve.training.column_checks import column_profile, constant_columns, suspect_columns
from aeserve.training.data import (
    ColumnChoice,
    DataError,
    add_reading_arguments,
    load_dataset,
    reading_options,
)
from aeserve.training.export import ExportError
from aeserve.training.model import MEMBER_VARIANTS, VARIANTS
from aeserve.training.objectives import VariantOptions
from aeserve.training.pipeline import train_and_export
from aeserve.training.plan import OvercompleteWarning, RaySettings, TrainOptions
from aeserve.training.trainer import TrainConfig
from aeserve.training.windowing import WindowOptions, load_keys, windowed


def _default(value: object) -> str:
    """` (default: VALUE)` for a help string, VALUE from training/defaults.py."""
    shown = " ".join(map(str, value)) if isinstance(value, tuple | list) else value
    return f" (default: {shown})"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The `aeserve train` options. None of them states a default: an option left out is None,
    and is left to the option dataclasses and the training plan (training/defaults.py, which
    the help text quotes)."""
    parser.add_argument("--data", required=True, type=Path,
                        help="CSV, Parquet or NPZ file; or a folder of Parquet files, or a glob "
                             "such as 'data/*.parquet' (quoted)")
    parser.add_argument("--name", required=True, help="model name (folder under --models-dir)")
    parser.add_argument("--label-column",
                        help="0/1 column (1 = anomaly): anomalies are kept out of training "
                             "and used for evaluation (default: none, every row is normal)")
    add_reading_arguments(parser)
    parser.add_argument("--columns", nargs="+", metavar="NAME",
                        help="the feature columns (default: every column but the label and id)")
    parser.add_argument("--drop-columns", nargs="+", metavar="NAME", default=[],
                        help="columns left out of the features (default: none)")
    parser.add_argument("--id-column",
                        help="a row id kept out of the features (default: none)")
    parser.add_argument("--allow-suspect-columns", action="store_true",
                        help="train on columns that look like a label or a row index (refused "
                             "by default: name them with --label-column, --id-column or "
                             "--drop-columns)")
    parser.add_argument("--variant", choices=VARIANTS,
                        help="autoencoder variant; see docs/variants.md"
                             + _default(defaults.VARIANT))
    parser.add_argument("--hidden", type=int, nargs="+", metavar="UNITS",
                        help="encoder layer widths, outermost first"
                             + _default(defaults.HIDDEN_SIZES))
    parser.add_argument("--activation", choices=["sigmoid", "relu", "tanh"],
                        help="hidden activation s_f (default: "
                             f"{defaults.ACTIVATION}; {defaults.KL_SPARSITY_ACTIVATION} for "
                             "sparse-kl)")
    parser.add_argument("--score", choices=["residual_cauchy", "mse_scaled"],
                        help="reconstruction score: the Cauchy log-likelihood of each feature's "
                             "residual at its typical held-out error, or the mean squared error"
                             + _default(defaults.SCORE))
    parser.add_argument("--decoder", choices=["identity", "sigmoid"],
                        help="identity: squared error on standardized inputs; sigmoid: "
                             "cross-entropy on inputs min-max scaled to [0, 1]"
                             + _default(defaults.DECODER_ACTIVATION))
    parser.add_argument("--tied", action="store_true", default=None,
                        help="tie decoder weights: W' = W^T (default: "
                             f"{'tied' if defaults.TIED_WEIGHTS else 'untied'})")
    parser.add_argument("--members", type=int,
                        help="networks trained side by side, scores averaged (default: "
                             f"{defaults.MEMBERS} for {', '.join(MEMBER_VARIANTS)} without "
                             "--tied; 1 otherwise)")
    parser.add_argument("--epochs", type=int, help="training epochs" + _default(defaults.EPOCHS))
    parser.add_argument("--batch-size", type=int, help="rows per mini-batch"
                        + _default(defaults.BATCH_SIZE))
    parser.add_argument("--lr", type=float, help="Adam's learning rate"
                        + _default(defaults.LEARNING_RATE))
    parser.add_argument("--min-steps", type=int,
                        help="train at least this many gradient steps; 0: exactly --epochs"
                             + _default(defaults.MIN_STEPS))
    parser.add_argument("--patience", type=int,
                        help="epochs without validation improvement before stopping (default: "
                             f"{defaults.PATIENCE}; runs of {defaults.EPOCHS} epochs never reach "
                             "it: it acts on small data, where --min-steps makes runs hundreds "
                             "of epochs long; the best epoch is kept either way)")
    parser.add_argument("--val-fraction", type=float,
                        help="hold this share of the normal rows out of training, to calibrate "
                             "the threshold and stop early (default: cross-fit the members, see "
                             f"docs/architecture.md; {defaults.VALIDATION_FRACTION} for a single "
                             "network)")
    parser.add_argument("--threshold",
                        help="threshold rule on held-out normal scores: quantile:Q, "
                             "contamination:C or sigma:K" + _default(defaults.THRESHOLD_RULE))
    parser.add_argument("--seed", type=int, help="seed of initialisation, shuffling and splits"
                        + _default(defaults.SEED))
    parser.add_argument("--models-dir", type=Path,
                        help=f"model repository (default: ${defaults.MODELS_DIR_ENV} when set, "
                             f"as for aeserve serve; else {defaults.MODELS_DIR})")
    parser.add_argument("--description", help="free text for the model card (default: none)")
    variants = parser.add_argument_group("variant options (each read by its own variant only)")
    variants.add_argument("--l1", type=float, metavar="LAMBDA",
                          help="sparse-l1: weight of lambda * sum |a_i| on the code layer"
                               + _default(defaults.L1_WEIGHT))
    variants.add_argument("--sparsity-target", type=float, metavar="P",
                          help="sparse-kl: target mean activation p"
                               + _default(defaults.SPARSITY_TARGET))
    variants.add_argument("--sparsity-weight", type=float, metavar="BETA",
                          help="sparse-kl: weight of the KL penalty"
                               + _default(defaults.SPARSITY_WEIGHT))
    variants.add_argument("--noise", choices=["gaussian", "masking"],
                          help="denoising: corruption during training" + _default(defaults.NOISE))
    variants.add_argument("--noise-level", type=float,
                          help="denoising: gaussian sigma (scaled units) or masking fraction"
                               + _default(defaults.NOISE_LEVEL))
    variants.add_argument("--contraction", type=float, metavar="LAMBDA",
                          help="contractive: weight of ||J_f(x)||_F^2"
                               + _default(defaults.CONTRACTION_WEIGHT))
    variants.add_argument("--beta", type=float,
                          help="vae: weight of the KL term of the ELBO"
                               + _default(defaults.VAE_BETA))
    variants.add_argument("--vae-score", choices=["reconstruction", "elbo"],
                          help="vae: score by reconstruction error at mu, or negative ELBO"
                               + _default(defaults.VAE_SCORE))
    windows = parser.add_argument_group(
        "windows of readings (time series; docs/streams.md)")
    windows.add_argument("--window", type=int, metavar="W",
                         help="train on windows of W consecutive readings of a series, each "
                              "flattened into one row; a row's score is its window's (default: "
                              "none, rows are scored on their own)")
    windows.add_argument("--stride", type=int, metavar="S",
                         help="--window: train on every S-th window of a series (default: 1, "
                              "every window)")
    windows.add_argument("--series-column", metavar="NAME",
                         help="--window: the column naming each row's series (machine, sensor, "
                              "host); windows never cross series (default: one series)")
    windows.add_argument("--time-column", metavar="NAME",
                         help="--window: order each series' rows by this column (numbers, "
                              "ISO 8601 text or timestamps; default: file order)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: this process; ray: data-parallel on Ray Train, reading "
                             "Parquet with Ray Data (default: %(default)s; pip install "
                             "'aeserve[ray]'; docs/scale.md)")
    parser.add_argument("--workers", type=int, default=2,
                        help="--engine ray: training processes, one CPU each (default: "
                             "%(default)s)")
    parser.add_argument("--ray-address", default=None,
                        help="--engine ray: the cluster to join (default: RAY_ADDRESS, else a "
                             "local Ray)")
    parser.add_argument("--spill", choices=["auto", "always", "never"], default="auto",
                        help="Parquet data larger than memory: write the float32 rows to a file "
                             "and train from it a block at a time (default: %(default)s: when "
                             "the float32 data exceeds half the machine's memory)")
    parser.add_argument("--spill-dir", type=Path, default=None,
                        help="where the spilled rows go, removed after training (default: the "
                             "system's temporary folder; it needs rows x features x 4 bytes)")


def _given(**values: object) -> dict[str, object]:
    """The options set on the command line; the rest stay with the dataclasses' defaults."""
    return {name: value for name, value in values.items() if value is not None}


def train_options(args: argparse.Namespace) -> TrainOptions:
    """The parsed command line as `TrainOptions`, unset options left to their defaults.

    Raises ValueError for invalid variant options."""
    variant_options = VariantOptions(**_given(
        l1_weight=args.l1, sparsity_target=args.sparsity_target,
        sparsity_weight=args.sparsity_weight, noise=args.noise, noise_level=args.noise_level,
        contraction_weight=args.contraction, vae_beta=args.beta, vae_score=args.vae_score))
    train = TrainConfig(**_given(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        patience=args.patience, seed=args.seed, min_steps=args.min_steps,
        progress=False if args.quiet else None))
    return TrainOptions(name=args.name, train=train, variant_options=variant_options,
                        engine=args.engine,
                        ray=RaySettings(workers=args.workers, address=args.ray_address),
                        **_given(
        models_dir=args.models_dir, variant=args.variant, hidden_sizes=args.hidden,
        activation=args.activation, decoder_activation=args.decoder, tied_weights=args.tied,
        members=args.members, validation_fraction=args.val_fraction,
        threshold_rule=args.threshold, description=args.description, score=args.score))


def window_options(args: argparse.Namespace) -> WindowOptions | None:
    """The `--window` options, or None for a row model (refused when given without --window).

    Raises ValueError for inconsistent window options."""
    if args.window is None:
        given = [flag for flag, value in (("--stride", args.stride),
                                          ("--series-column", args.series_column),
                                          ("--time-column", args.time_column)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need --window")
        return None
    if args.engine != "local":
        raise ValueError("--window trains with --engine local")
    options = WindowOptions(size=args.window, stride=args.stride or 1,
                            series_column=args.series_column, time_column=args.time_column)
    options.check()
    return options


def run_train(args: argparse.Namespace) -> int:
    try:
        options = train_options(args)
        parse_threshold_rule(options.threshold_rule)  # a typo is found before the data is read
        window = window_options(args)
    except ValueError as exc:
        print(f"aeserve train: error: {exc}", file=sys.stderr)
        return 2
    if args.spill_dir is not None and not args.spill_dir.is_dir():
        print(f"aeserve train: error: --spill-dir {args.spill_dir} is not a folder",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="aeserve-spill-", dir=args.spill_dir) as spill_dir:
        return _load_and_train(args, options, Path(spill_dir), window)


def _load_and_train(args: argparse.Namespace, options: TrainOptions, spill_dir: Path,
                    window: WindowOptions | None) -> int:
    # the series and time are columns of a CSV or Parquet file, arrays of their own in an NPZ
    keys = (window.key_columns if window is not None and Path(args.data).suffix.lower() != ".npz"
            else ())
    try:
        data = load_dataset(args.data, **reading_options(args), choice=ColumnChoice(
            label=args.label_column, id=args.id_column,
            columns=tuple(args.columns) if args.columns else None,
            drop=tuple(args.drop_columns) + tuple(k for k in keys if k not in args.drop_columns)),
            spill=args.spill, spill_dir=spill_dir)
        profile = column_profile(data.X)
        suspects = [] if args.allow_suspect_columns else suspect_columns(data, profile)
        if suspects:
            raise DataError(f"{data.source}: " + "; ".join(suspects)
                            + " (or --allow-suspect-columns to train on them as they are)")
        for name in constant_columns(data, profile):
            print(f"aeserve train: warning: column {name!r} holds one value throughout: it "
                  "carries nothing (--drop-columns leaves it out)", file=sys.stderr)
        if window is not None:
            data = windowed(data, window, load_keys(args.data, window, reading_options(args)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", OvercompleteWarning)
            outcome = train_and_export(data, options)
    except (DataError, ExportError, ValueError) as exc:
        print(f"aeserve train: error: {exc}", file=sys.stderr)
        return 2
    for warning in caught:
        if issubclass(warning.category, OvercompleteWarning):
            print(f"aeserve train: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
    card = outcome.card
    print(f"model {card.name} version {card.version} written to {outcome.path}")
    print(f"  epochs {card.training.epochs_run} (best {card.training.best_epoch}), "
          f"val loss {card.training.val_loss:.5f}")
    print(f"  threshold {card.threshold:.6g} ({card.threshold_rule})")
    print(f"  ONNX parity max abs error {card.parity_max_abs_error:.3g} "
          f"on {card.parity_rows} rows")
    if card.evaluation is not None:
        ev = card.evaluation
        print(f"  evaluation: ROC-AUC {ev.roc_auc:.4f}, AP {ev.average_precision:.4f}, "
              f"precision {ev.precision_at_threshold:.3f}, recall {ev.recall_at_threshold:.3f} "
              f"({ev.rows_normal} normal, {ev.rows_anomalous} anomalous rows)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of the training subcommands, `train` and `evaluate`."""
    from aeserve.training import evaluate

    parser = argparse.ArgumentParser(prog="aeserve")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train", help="train a model and publish it"))
    evaluate.add_arguments(commands.add_parser(
        "evaluate", help="score a labelled file and report ROC-AUC, AP, precision and recall"))
    return parser


def main(argv: list[str]) -> int:
    """Entry point for the training subcommands; `argv[0]` names the subcommand."""
    from aeserve.training import evaluate

    args = build_parser().parse_args(argv)
    return run_train(args) if args.command == "train" else evaluate.run(args)
