"""`aeserve score`: score a CSV or Parquet file with a model version, in process, no server.

    aeserve score --model models/NAME[/VERSION] --data FILE --out FILE [--id-column ID]
                  [--top-k K] [--engine local|ray]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aeserve.batch.files import Sink, file_kind, open_source
from aeserve.batch.local import Summary, score_file
from aeserve.batch.model import BatchScorer, ScoringError, load_model

DEFAULT_BATCH_ROWS = 65536


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aeserve score",
        description="Score a CSV or Parquet file (or a folder of Parquet files) with a model "
                    "version, in process: the file's columns are matched to the model's "
                    "features by name, and each row gets score, is_anomaly and percentile.")
    parser.add_argument("--model", required=True, type=Path,
                        help="models/NAME (its newest version that loads) or models/NAME/VERSION")
    parser.add_argument("--data", required=True, type=Path,
                        help=".csv (with a header row), .parquet, or a folder of .parquet files")
    parser.add_argument("--out", required=True, type=Path,
                        help=".csv or .parquet file; with --engine ray, also a folder (no "
                             "suffix) of Parquet files written by the workers")
    parser.add_argument("--id-column", default=None,
                        help="a column copied to the output, first, to tell the rows apart "
                             "(default: none)")
    parser.add_argument("--keep-columns", nargs="+", default=[], metavar="NAME",
                        help="other columns copied to the output after the id, as in the file "
                             "(one named like an output column, such as is_anomaly, is written "
                             "as NAME_input; default: none)")
    parser.add_argument("--top-k", type=int, default=0, metavar="K",
                        help="also write the K features with the largest reconstruction errors "
                             "(top1_feature, top1_error, ...; default: %(default)s, none)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: onnxruntime in this process; ray: Ray Data, Parquet only "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_ROWS,
                        help="rows per onnxruntime run (Parquet batches, Ray batches; "
                             "default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="batches scored at once by the local engine, one onnxruntime thread "
                             "each (default: every core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    ray = parser.add_argument_group("Ray engine")
    ray.add_argument("--ray-address", default=None,
                     help="cluster to join (default: RAY_ADDRESS, else a local Ray started here)")
    ray.add_argument("--num-cpus", type=int, default=None,
                     help="CPUs of the local Ray started here (default: every core)")
    ray.add_argument("--actors", type=int, default=None,
                     help="scoring actors, one onnxruntime session each (default: the cluster's "
                          "CPUs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except ScoringError as exc:
        print(f"aeserve score: error: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    return 0


def run(args: argparse.Namespace) -> Summary:
    if args.batch_size <= 0:
        raise ScoringError(f"--batch-size must be positive, got {args.batch_size}")
    if args.workers is not None and args.workers <= 0:
        raise ScoringError(f"--workers must be positive, got {args.workers}")
    if args.engine == "ray":
        from aeserve.batch.ray_engine import score_with_ray

        loaded = load_model(args.model)
        if loaded.card.window is not None:
            raise ScoringError("a windowed model scores with --engine local (its windows need "
                               "each series' readings in time order)")
        _warn_skipped(loaded)
        return score_with_ray(loaded, args.data, args.out, top_k=args.top_k,
                              id_column=args.id_column, keep_columns=args.keep_columns,
                              batch_rows=args.batch_size,
                              actors=args.actors, address=args.ray_address,
                              num_cpus=args.num_cpus, progress=not args.quiet)

    file_kind(args.out)
    loaded = load_model(args.model)
    _warn_skipped(loaded)
    if loaded.card.window is not None:
        from aeserve.batch.windowed import score_windowed_file

        return score_windowed_file(loaded, args.data, args.out, id_column=args.id_column,
                                   keep_columns=args.keep_columns, top_k=args.top_k)
    entry = loaded.entry
    scorer = BatchScorer(entry.card, entry.session, top_k=args.top_k, id_column=args.id_column,
                         keep_columns=args.keep_columns)
    source = open_source(args.data, entry.card.feature_names, list(scorer.carried),
                         args.batch_size)
    return score_file(scorer, source, Sink(args.out), progress=not args.quiet,
                      workers=args.workers, name=entry.name, version=entry.version)


def _warn_skipped(loaded) -> None:
    for entry in loaded.skipped:
        print(f"aeserve score: warning: {entry.name} version {entry.version} skipped: "
              f"{entry.error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
