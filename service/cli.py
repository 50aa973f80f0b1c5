"""The `aeserve` command: `serve` runs here; `train` lives in training/ and needs the train extra;
`score` (batch scoring of files) lives in scoring/ and needs the batch extra.

The training and scoring code is imported only when its subcommand runs, so `aeserve serve` and
`aeserve score` never load torch and work in an image that has none.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

TRAINING_COMMANDS = {
    "train": "train a model and publish it to the repository (needs [train])",
    "evaluate": "score a labelled file with a model: ROC-AUC, AP, precision, recall, plots "
                "(needs [train])",
}
SCORING_COMMANDS = {"score": "score a CSV or Parquet file in process, no server (needs [batch])"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aeserve", description="Autoencoders for anomaly detection: train, export, serve.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the model repository over HTTP")
    serve.add_argument("--models-dir", default=None,
                       help="model repository (default: AESERVE_MODELS_DIR, else ./models)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    for name, help_text in {**TRAINING_COMMANDS, **SCORING_COMMANDS}.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TRAINING_COMMANDS:
        run = _load_main("training.cli", "training", "train", argv[0])
        return 2 if run is None else run(argv)  # training's parser takes the subcommand too
    if argv and argv[0] in SCORING_COMMANDS:
        run = _load_main("scoring.cli", "batch", "batch", argv[0])
        return 2 if run is None else run(argv[1:])
    args = build_parser().parse_args(argv)
    return serve(args)


def _load_main(module: str, label: str, extra: str, command: str):
    """The `main` of an optional part, or None after saying which extra installs it."""
    try:
        return importlib.import_module(module).main
    except ImportError as exc:
        print(f"aeserve {command} needs the {label} extra (pip install 'aeserve[{extra}]'): "
              f"{exc}", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.models_dir is not None:
        os.environ["AESERVE_MODELS_DIR"] = args.models_dir
    from service.settings import Settings

    settings = Settings()
    if settings.workers > 1:
        prepare_multiprocess_metrics()
    uvicorn.run("service.app:create_app", factory=True, host=args.host, port=args.port,
                workers=settings.workers, log_level=settings.log_level.lower(),
                access_log=False, timeout_graceful_shutdown=None,
                # Neither is used (no client address is logged, no version is advertised), and
                # both cost time on every request.
                proxy_headers=False, server_header=False)
    return 0


def prepare_multiprocess_metrics() -> None:
    """Give the workers a fresh shared folder for their metrics files (prometheus-client's
    multi-process mode), unless the operator chose one."""
    import tempfile

    from service.metrics import MULTIPROCESS_ENV

    folder = os.environ.get(MULTIPROCESS_ENV)
    if folder is None:
        folder = tempfile.mkdtemp(prefix="aeserve-metrics-")
        os.environ[MULTIPROCESS_ENV] = folder
    for stale in os.listdir(folder):  # files of a previous run would add to this one's counts
        if stale.endswith(".db"):
            os.remove(os.path.join(folder, stale))


if __name__ == "__main__":
    sys.exit(main())
