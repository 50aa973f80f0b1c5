"""`aeserve train`: train an autoencoder on a data file and publish it to the model repository."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from aeserve.training.data import DataError, load_dataset
from aeserve.training.export import ExportError
from aeserve.training.model import DEFAULT_MEMBERS, MEMBER_VARIANTS, VARIANTS, DecoderActivation
from aeserve.training.objectives import VariantOptions
from aeserve.training.pipeline import OvercompleteWarning, TrainOptions, train_and_export
from aeserve.training.trainer import TrainConfig


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="CSV, Parquet or NPZ file")
    parser.add_argument("--name", required=True, help="model name (folder under --models-dir)")
    parser.add_argument("--label-column", default=None,
                        help="0/1 column (1 = anomaly): anomalies are kept out of training "
                             "and used for evaluation")
    parser.add_argument("--variant", default="ae", choices=VARIANTS,
                        help="autoencoder variant; see docs/variants.md")
    parser.add_argument("--hidden", type=int, nargs="+", default=None, metavar="UNITS",
                        help="encoder layer widths, outermost first (default: 64 32 8)")
    parser.add_argument("--activation", default=None, choices=["sigmoid", "relu", "tanh"],
                        help="hidden activation s_f (default: relu; sigmoid for sparse-kl)")
    parser.add_argument("--decoder", default="identity", choices=["identity", "sigmoid"],
                        help="identity: squared error on standardized inputs; sigmoid: "
                             "cross-entropy on inputs min-max scaled to [0, 1]")
    parser.add_argument("--tied", action="store_true", help="tie decoder weights: W' = W^T")
    parser.add_argument("--members", type=int, default=None,
                        help="networks trained side by side, scores averaged (default: "
                             f"{DEFAULT_MEMBERS} for {', '.join(MEMBER_VARIANTS)}; 1 otherwise)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--min-steps", type=int, default=TrainConfig.min_steps,
                        help="train at least this many gradient steps (0: exactly --epochs)")
    parser.add_argument("--patience", type=int, default=TrainConfig.patience,
                        help="epochs without validation improvement before stopping")
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="hold this share of the normal rows out of training, to calibrate "
                             "the threshold and stop early (default: cross-fit the members, see "
                             "docs/architecture.md; 0.2 for a single network)")
    parser.add_argument("--threshold", default="quantile:0.99",
                        help="threshold rule on held-out normal scores, e.g. quantile:0.99")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--description", default="")
    defaults = VariantOptions()
    variants = parser.add_argument_group("variant options (each read by its own variant only)")
    variants.add_argument("--l1", type=float, default=defaults.l1_weight, metavar="LAMBDA",
                          help="sparse-l1: weight of lambda * sum |a_i| on the code layer")
    variants.add_argument("--sparsity-target", type=float, default=defaults.sparsity_target,
                          metavar="P", help="sparse-kl: target mean activation p")
    variants.add_argument("--sparsity-weight", type=float, default=defaults.sparsity_weight,
                          metavar="BETA", help="sparse-kl: weight of the KL penalty")
    variants.add_argument("--noise", default=defaults.noise, choices=["gaussian", "masking"],
                          help="denoising: corruption during training")
    variants.add_argument("--noise-level", type=float, default=defaults.noise_level,
                          help="denoising: gaussian sigma (scaled units) or masking fraction")
    variants.add_argument("--contraction", type=float, default=defaults.contraction_weight,
                          metavar="LAMBDA", help="contractive: weight of ||J_f(x)||_F^2")
    variants.add_argument("--beta", type=float, default=defaults.vae_beta,
                          help="vae: weight of the KL term of the ELBO")
    variants.add_argument("--vae-score", default=defaults.vae_score,
                          choices=["reconstruction", "elbo"],
                          help="vae: score by reconstruction error at mu, or negative ELBO")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    decoder: DecoderActivation = args.decoder
    try:
        variant_options = VariantOptions(
            l1_weight=args.l1, sparsity_target=args.sparsity_target,
            sparsity_weight=args.sparsity_weight, noise=args.noise,
            noise_level=args.noise_level, contraction_weight=args.contraction,
            vae_beta=args.beta, vae_score=args.vae_score)
    except ValueError as exc:
        print(f"aeserve train: error: {exc}", file=sys.stderr)
        return 2
    options = TrainOptions(
        name=args.name,
        models_dir=args.models_dir,
        variant=args.variant,
        hidden_sizes=args.hidden,
        activation=args.activation,
        decoder_activation=decoder,
        tied_weights=args.tied,
        members=args.members,
        validation_fraction=args.val_fraction,
        threshold_rule=args.threshold,
        description=args.description,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                          learning_rate=args.lr, patience=args.patience, seed=args.seed,
                          min_steps=args.min_steps,
                          progress=not args.quiet),
        variant_options=variant_options,
    )
    try:
        data = load_dataset(args.data, args.label_column)
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


def main(argv: list[str]) -> int:
    """Entry point for the training subcommands; `argv[0]` names the subcommand."""
    from aeserve.training import evaluate

    parser = argparse.ArgumentParser(prog="aeserve")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train", help="train a model and publish it"))
    evaluate.add_arguments(commands.add_parser(
        "evaluate", help="score a labelled file and report ROC-AUC, AP, precision and recall"))
    args = parser.parse_args(argv)
    return run_train(args) if args.command == "train" else evaluate.run(args)
