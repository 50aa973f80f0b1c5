"""The `aeserve` command: `serve`, `train`, `evaluate`, `score`, `stream`.

The only module that knows every part of aeserve. Each part is imported when its subcommand runs,
so `aeserve serve` never loads torch, and a part whose extra is not installed is named with the
extra that installs it instead of failing with an ImportError.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

#: subcommand -> (what it does, the extra it needs)
COMMANDS = {
    "serve": ("serve the model repository over HTTP", "serve"),
    "train": ("train a model and publish it to the repository", "train"),
    "evaluate": ("score a labelled file with a model: ROC-AUC, AP, precision, recall, plots; "
                 "or, with --from-log DIR, the labelled verdicts of a server's prediction log",
                 "train"),
    "score": ("score a CSV or Parquet file in process, no server", "batch"),
    "stream": ("score streamed readings from an MQTT topic in process, with per-series "
               "windows and alarms", "stream"),
}
#: Modes of a subcommand that need another extra than the subcommand's.
MODES = {"evaluate --from-log": ("evaluate a prediction log's labelled verdicts", "batch")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aeserve", description="Autoencoders for anomaly detection: train, export, serve.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help=COMMANDS["serve"][0])
    serve.add_argument("--models-dir", default=None,
                       help="model repository (default: AESERVE_MODELS_DIR, else ./models)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: %(default)s; 0.0.0.0 for every "
                            "interface)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    for name, (help_text, extra) in COMMANDS.items():
        if name != "serve":
            commands.add_parser(name, help=f"{help_text} (needs [{extra}])", add_help=False)
    return parser


#: The exit status of a command whose reader closed the pipe (128 + SIGPIPE), as a shell's own
#: commands give it.
CLOSED_PIPE_STATUS = 141


def main(argv: list[str] | None = None) -> int:
    """`aeserve`: one subcommand. A closed pipe (`aeserve evaluate ... | head`) ends it quietly,
    as it ends any shell command, not with a traceback."""
    try:
        return _dispatch(argv)
    except BrokenPipeError:
        # Python would report the failed flush of stdout at exit: point stdout elsewhere first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return CLOSED_PIPE_STATUS


def _dispatch(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    if command == "evaluate" and any(a == "--from-log" or a.startswith("--from-log=")
                                     for a in argv):
        run = _part("evaluate --from-log", _log_evaluation_main)
        return 2 if run is None else run(argv[1:])
    if command in ("train", "evaluate"):
        run = _part(command, _training_main)
        return 2 if run is None else run(argv)  # training's parser takes the subcommand too
    if command == "score":
        run = _part(command, _batch_main)
        return 2 if run is None else run(argv[1:])
    if command == "stream":
        run = _part(command, _stream_main)
        return 2 if run is None else run(argv[1:])
    args = build_parser().parse_args(argv)
    serve = _part("serve", _serving_run)
    return 2 if serve is None else serve(args.host, args.port, args.models_dir)


def _training_main() -> Callable[[list[str]], int]:
    from aeserve.training.cli import main as training_main

    return training_main


def _log_evaluation_main() -> Callable[[list[str]], int]:
    from aeserve.batch.log_evaluation import main as log_evaluation_main

    return log_evaluation_main


def _batch_main() -> Callable[[list[str]], int]:
    from aeserve.batch.cli import main as batch_main

    return batch_main


def _stream_main() -> Callable[[list[str]], int]:
    import paho.mqtt  # noqa: F401  (the extra's own library: missing, the extra is named)

    from aeserve.batch.stream_runner import main as stream_main

    return stream_main


def _serving_run() -> Callable[[str, int, str | None], int]:
    from aeserve.serving.server import run

    return run


def _part(command: str, load: Callable[[], Callable]) -> Callable | None:
    """The entry point of a part, or None after saying which extra installs it."""
    try:
        return load()
    except ImportError as exc:
        extra = {**COMMANDS, **MODES}[command][1]
        print(f"aeserve {command} needs the {extra} extra (pip install 'aeserve[{extra}]'): "
              f"{exc}", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
