"""`aeserve evaluate --from-log DIR`: precision and recall of what a server answered, from the
labels sent back for it, and the threshold that would meet a target.

Reads a prediction log (AESERVE_PREDICTION_LOG; format in aeserve/artifact/prediction_log.py),
joins each label to its prediction exactly as the server's feedback route does, and reports per
model version:

- the confusion counts of the verdicts served (the same figures as the server's
  `aeserve_feedback_labels_total`, when every label found its prediction there), with precision,
  recall and the false-alarm rate;
- for `--target-precision P`: the lowest threshold whose precision on the labelled rows is at
  least P (the most alarms caught at that precision); for `--target-false-alarm-rate F`: the
  lowest threshold that flags at most a share F of the rows labelled normal. The proposal is
  printed as the `config.json` entry that applies it (managed thresholds).

Scores of different versions are not comparable, so each version gets its own proposal. Labels
are a sample chosen by people (mostly alarms, often), so a proposal is only as good as the
labelled rows are representative: the report says how many rows of each class it rests on.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aeserve.artifact.prediction_log import OUTCOMES, JoinedLabels, join_feedback, outcome


@dataclass(frozen=True)
class Rates:
    precision: float | None
    recall: float | None
    false_alarm_rate: float | None


def rates(counts: dict[str, int]) -> Rates:
    tp, fp = counts["true_positive"], counts["false_positive"]
    tn, fn = counts["true_negative"], counts["false_negative"]
    return Rates(tp / (tp + fp) if tp + fp else None, tp / (tp + fn) if tp + fn else None,
                 fp / (fp + tn) if fp + tn else None)


def confusion(labels: np.ndarray, flagged: np.ndarray) -> dict[str, int]:
    """Counts by outcome of `labels` against the verdicts `flagged`."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for label, verdict in zip(labels.tolist(), flagged.tolist(), strict=True):
        counts[outcome(label, verdict)] += 1
    return counts


@dataclass(frozen=True)
class Proposal:
    """A threshold, and what it gives on the labelled rows (a row is flagged when its score is
    strictly above the threshold)."""

    threshold: float
    flagged: int
    counts: dict[str, int]
    rates: Rates


def propose(scores: np.ndarray, labels: np.ndarray, *, target_precision: float | None = None,
            target_false_alarm_rate: float | None = None) -> Proposal | None:
    """The lowest threshold meeting the target on these labelled rows, or None if none does.

    The candidates lie between consecutive distinct scores (midway: the rows above are flagged,
    and a score that lands near either neighbour later is judged as that neighbour was), above
    the highest score (no alarm) and a little below the lowest (every row flagged); the counts
    at each come from cumulative sums over the rows sorted by score, so a million labels cost
    one sort.
    """
    if (target_precision is None) == (target_false_alarm_rate is None):
        raise ValueError("give exactly one target")
    order = np.argsort(-scores, kind="stable")
    ranked, positive = scores[order], labels[order].astype(np.int64)
    # the k-th candidate flags the rows before `ends[k]`: none, then each group of equal scores
    last_of_group = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    ends = np.concatenate([[0], last_of_group + 1])
    group_scores = ranked[last_of_group]
    lowest = group_scores[-1]
    thresholds = np.concatenate([[group_scores[0]],  # flags none: nothing is above the highest
                                 (group_scores[:-1] + group_scores[1:]) / 2,
                                 [lowest - max(abs(lowest), 1e-12) * 0.01]])
    tp = np.concatenate([[0], np.cumsum(positive)])[ends]
    fp = ends - tp
    negatives = len(positive) - int(positive.sum())
    if target_precision is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            meets = (ends > 0) & (tp >= target_precision * ends)
    else:
        meets = fp <= target_false_alarm_rate * negatives
    if not meets.any():
        return None
    k = int(np.flatnonzero(meets)[-1])  # the most alarms that still meet the target
    threshold = float(thresholds[k])
    counts = confusion(labels, scores > threshold)
    return Proposal(threshold, int(ends[k]), counts, rates(counts))


def report(joined: JoinedLabels, target_precision: float | None,
           target_false_alarm_rate: float | None) -> dict:
    """Per model and version: served confusion counts and rates, and the proposed threshold."""
    versions = []
    models = np.asarray(joined.model, dtype=object)
    for model, version in sorted({(m, int(v)) for m, v in zip(joined.model,
                                                             joined.version.tolist(),
                                                             strict=True)}):
        mask = (models == model) & (joined.version == version)
        labels, scores = joined.label[mask], joined.score[mask]
        served = confusion(labels, joined.is_anomaly[mask])
        entry = {"model": model, "version": version, "labels": int(mask.sum()),
                 "anomalies_labelled": int(labels.sum()),
                 "thresholds_served": sorted(set(joined.threshold[mask].tolist())),
                 "served": served, "served_rates": asdict(rates(served)), "proposal": None}
        if target_precision is not None or target_false_alarm_rate is not None:
            proposal = propose(scores, labels, target_precision=target_precision,
                               target_false_alarm_rate=target_false_alarm_rate)
            if proposal is not None:
                entry["proposal"] = {**asdict(proposal), "config_json": {
                    "thresholds": {str(version): {"value": proposal.threshold}}}}
        versions.append(entry)
    return {"versions": versions, "unmatched_labels": joined.unmatched}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render(result: dict, directory: Path, target: str | None) -> str:
    lines = [f"prediction log {directory}: "
             f"{sum(v['labels'] for v in result['versions'])} labels joined to predictions"
             + "".join(f"; {n} labels of {m} without a logged prediction"
                       for m, n in sorted(result["unmatched_labels"].items()))]
    lines[0] = lines[0].replace(" 1 labels ", " 1 label ")
    for entry in result["versions"]:
        c, r = entry["served"], entry["served_rates"]
        lines += ["", f"model {entry['model']}, version {entry['version']}: {entry['labels']} "
                      f"labels ({entry['anomalies_labelled']} anomalies)",
                  f"  verdicts served (threshold "
                  f"{', '.join(f'{t:.6g}' for t in entry['thresholds_served'])}): "
                  f"TP {c['true_positive']}  FP {c['false_positive']}  TN {c['true_negative']}  "
                  f"FN {c['false_negative']}",
                  f"  precision {_fmt(r['precision'])}  recall {_fmt(r['recall'])}  "
                  f"false-alarm rate {_fmt(r['false_alarm_rate'])}"]
        if target is None:
            continue
        proposal = entry["proposal"]
        if proposal is None:
            lines.append(f"  no threshold reaches {target} on these labels")
            continue
        p = proposal["rates"]
        lines += [f"  threshold for {target}: {proposal['threshold']:.6g} (flags "
                  f"{proposal['flagged']} of {entry['labels']}: precision {_fmt(p['precision'])}"
                  f", recall {_fmt(p['recall'])}, false-alarm rate "
                  f"{_fmt(p['false_alarm_rate'])})",
                  f"  apply it in models/{entry['model']}/config.json: "
                  f"{json.dumps(proposal['config_json'])}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aeserve evaluate --from-log",
        description="Precision and recall of the verdicts a server gave, from the labels sent "
                    "to POST /models/{name}/feedback, and a threshold for a target.")
    parser.add_argument("--from-log", type=Path, required=True, metavar="DIR",
                        help="the server's AESERVE_PREDICTION_LOG folder")
    parser.add_argument("--model", default=None, help="only this model (default: every one)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-precision", type=_share, default=None, metavar="P",
                        help="propose the lowest threshold with precision >= P")
    target.add_argument("--target-false-alarm-rate", type=_share, default=None, metavar="F",
                        help="propose the lowest threshold that flags at most a share F of "
                             "the rows labelled normal")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.from_log.is_dir():
        print(f"aeserve evaluate: {args.from_log} is not a folder", file=sys.stderr)
        return 2
    joined = join_feedback(args.from_log, args.model)
    result = report(joined, args.target_precision, args.target_false_alarm_rate)
    target = (f"precision >= {args.target_precision}" if args.target_precision is not None else
              f"false-alarm rate <= {args.target_false_alarm_rate}"
              if args.target_false_alarm_rate is not None else None)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result, args.from_log, target))
    return 0
