"""The monitoring loop of docs/monitoring.md on a real data set, end to end, with real processes.

ADBench's cardio (1,831 cardiotocography records x 21 features, 176 anomalies) is split in
halves, stratified and seeded. Version 1 is trained with `aeserve train`'s defaults on the first
half (its labelled anomalies are held out for the card's evaluation), version 2, a single network
(`--members 1`), on the same rows. The model's config.json sets a managed threshold
(`quantile:0.995` for every version) and makes version 2 the shadow of version 1 on every request.
`aeserve serve` then takes the second half as live traffic, twice: as it is, and with one feature
shifted by one training standard deviation. The script records what the server says: the threshold
in force, the drift report of each phase, the anomaly rate against the card's, the shadow's
comparison, precision and recall of the served verdicts against the labels, and a V2 call with
`is_anomaly`. The live rows carry ids, the server keeps a prediction log, and the first phase's
labels are sent back (POST /models/cardio/feedback): the confusion counts in /metrics, and
`aeserve evaluate --from-log` on the log with the thresholds it proposes. Writes
bench/results/monitoring.md.

    python -m bench.monitoring_walkthrough [--out bench/results/monitoring.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from sklearn.model_selection import train_test_split

from bench.protocol import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
DATASET = "6_cardio"
SHIFTED = "f3"  # the feature shifted in the second phase (any would do; fixed, not chosen)


def write_csv(path: Path, X: np.ndarray, y: np.ndarray | None) -> None:
    names = [f"f{j}" for j in range(X.shape[1])]
    columns = [X] if y is None else [X, y[:, None]]
    np.savetxt(path, np.hstack(columns), delimiter=",", comments="", fmt="%.8g",
               header=",".join(names + ([] if y is None else ["y"])))


def train(data: Path, models: Path, *extra: str) -> dict:
    subprocess.run([sys.executable, "-m", "aeserve.cli", "train", "--data", str(data),
                    "--label-column", "y", "--name", "cardio", "--models-dir", str(models),
                    "--seed", "0", "--quiet", *extra], check=True, cwd=ROOT)
    newest = max((p for p in (models / "cardio").iterdir() if p.name.isdigit()),
                 key=lambda p: int(p.name))
    return json.loads((newest / "model.json").read_text())


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def send(client: httpx.Client, rows: np.ndarray, phase: str) -> np.ndarray:
    """Score `rows` 50 at a time, one request after the other (each its own batch, within the
    64 rows a batch brings to the drift window, so every row enters it), with ids `phase-i`;
    the served verdicts."""
    flags = []
    for start in range(0, len(rows), 50):
        answer = client.post("/anomaly-score", json={
            "instances": rows[start:start + 50].tolist(),
            "ids": [f"{phase}-{i}" for i in range(start, min(start + 50, len(rows)))]})
        answer.raise_for_status()
        flags += answer.json()["is_anomaly"]
    return np.array(flags)


def drift_lines(report: dict, top: int = 4) -> list[str]:
    lines = ["| feature | PSI | drifted |", "|---|---:|---|"]
    lines += [f"| {f['name']} | {f['psi']:.3f} | {'yes' if f['drifted'] else 'no'} |"
              for f in report["features"][:top]]
    rest = report["features"][top:]
    lines.append(f"| ({len(rest)} others) | at most {max(f['psi'] for f in rest):.3f} | no |")
    lines.append(f"| score | {report['score']['psi']:.3f} | "
                 f"{'yes' if report['score']['drifted'] else 'no'} |")
    rate = report["anomaly_rate"]
    lines += ["", f"Window: {report['window']['rows']} rows. Anomaly rate in the window "
              f"{rate['window']:.3f}, expected of normal rows at the threshold in force "
              f"{rate['expected']:.3f}."]
    return lines


def precision_recall(flags: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    hits = int(np.count_nonzero(flags & (y == 1)))
    return hits / max(1, int(flags.sum())), hits / max(1, int((y == 1).sum()))


def feedback_metrics(text: str) -> dict[str, int]:
    """`aeserve_feedback_labels_total` of cardio, by outcome."""
    counts = {}
    for line in text.splitlines():
        if line.startswith("aeserve_feedback_labels_total{") and 'model="cardio"' in line:
            counts[line.split('outcome="')[1].split('"')[0]] = int(float(line.split()[-1]))
    return dict(sorted(counts.items()))


def evaluate_log(log: Path, target: str) -> dict:
    """`aeserve evaluate --from-log` on the server's log, its JSON report."""
    done = subprocess.run([sys.executable, "-m", "aeserve.cli", "evaluate", "--from-log",
                           str(log), target, "--json"], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


def evaluation_lines(evaluations: dict[str, dict]) -> list[str]:
    lines = ["`aeserve evaluate --from-log DIR` on the server's prediction log (the same join):",
             "",
             "| run | served TP / FP / TN / FN | precision | recall | proposed threshold | "
             "its precision | its recall | its false-alarm rate |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for target, result in evaluations.items():
        [entry] = result["versions"]
        c, r, p = entry["served"], entry["served_rates"], entry["proposal"]
        lines.append(
            f"| `{target}` | {c['true_positive']} / {c['false_positive']} / "
            f"{c['true_negative']} / {c['false_negative']} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | " + (
                f"{p['threshold']:.4f} | {p['rates']['precision']:.3f} | "
                f"{p['rates']['recall']:.3f} | {p['rates']['false_alarm_rate']:.3f} |"
                if p else "none | | | |"))
    lines += ["", "The proposals are read off the same labelled rows they are scored on (in "
              "sample): a threshold to try, through config.json, and to check on the labels "
              "that follow."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "monitoring.md")
    args = parser.parse_args()
    with np.load(DATA_DIR / f"{DATASET}.npz") as archive:
        X, y = archive["X"].astype(np.float64), archive["y"].astype(np.int64)
    X_train, X_live, y_train, y_live = train_test_split(X, y, test_size=0.5, stratify=y,
                                                        random_state=0)
    work = Path(tempfile.mkdtemp(prefix="aeserve-monitoring-"))
    write_csv(work / "train.csv", X_train, y_train)
    started = time.perf_counter()
    one = train(work / "train.csv", work / "models")
    two = train(work / "train.csv", work / "models", "--members", "1")
    trained_s = time.perf_counter() - started
    (work / "models" / "cardio" / "config.json").write_text(json.dumps(
        {"thresholds": {"*": {"rule": "quantile:0.995"}},
         "shadow": {"version": 2, "fraction": 1.0}}))

    port = free_port()
    env = {**os.environ, "AESERVE_MODELS_DIR": str(work / "models"),
           "AESERVE_DRIFT_WINDOW_ROWS": str(len(X_live)), "AESERVE_POLL_INTERVAL_S": "0",
           "AESERVE_PREDICTION_LOG": str(work / "log")}
    server = subprocess.Popen([sys.executable, "-m", "aeserve.cli", "serve", "--port",
                               str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(300):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            model = client.get("/models/cardio").json()
            calm_flags = send(client, X_live, "calm")
            calm = client.get("/models/cardio/drift").json()
            shifted = X_live.copy()
            column = int(SHIFTED[1:])
            shifted[:, column] += X_train[y_train == 0, column].std()
            shifted_flags = send(client, shifted, "shifted")
            moved = client.get("/models/cardio/drift").json()
            time.sleep(1.0)  # the shadow's last comparisons, off the request path
            shadow = client.get("/models/cardio/shadow").json()
            feedback = client.post("/models/cardio/feedback", json={
                "ids": [f"calm-{i}" for i in range(len(X_live))],
                "labels": y_live.tolist()}).json()
            confusion = feedback_metrics(client.get("/metrics").text)
            v2 = client.post("/v2/models/cardio/infer", json={
                "inputs": [{"name": "x", "shape": [2, X.shape[1]], "datatype": "FP64",
                            "data": X_live[:2].ravel().tolist()}],
                "outputs": [{"name": "score"}, {"name": "is_anomaly"}]}).json()
    finally:
        server.terminate()
        server.wait(timeout=30)

    evaluations = {target: evaluate_log(work / "log", target)
                   for target in ("--target-precision=0.5", "--target-false-alarm-rate=0.01")}
    calm_p, calm_r = precision_recall(calm_flags, y_live)
    moved_p, moved_r = precision_recall(shifted_flags, y_live)
    threshold = model["threshold"]
    lines = [
        "# Monitoring walkthrough",
        "",
        f"One run of `python -m bench.monitoring_walkthrough` on ADBench's {DATASET} "
        f"({len(X):,} rows x {X.shape[1]} features, {int(y.sum())} anomalies), halves "
        f"stratified with seed 0: {len(X_train)} rows to train on, {len(X_live)} rows of live "
        f"traffic ({int(y_live.sum())} anomalies). Two versions trained in {trained_s:.0f} s.",
        "",
        f"- version 1 (defaults, {one['architecture']['members']} members): evaluation ROC-AUC "
        f"{one['evaluation']['roc_auc']:.3f}; version 2 (`--members 1`): "
        f"{two['evaluation']['roc_auc']:.3f}.",
        f"- Threshold in force (config.json `quantile:0.995`): {threshold['value']:.4f} "
        f"(source: {threshold['source']}); the card's own, by its rule "
        f"`{one['threshold_rule']}`: {threshold['card_value']:.4f}.",
        f"- Served verdicts on the live half against its labels: precision {calm_p:.3f}, recall "
        f"{calm_r:.3f}; with {SHIFTED} shifted: precision {moved_p:.3f}, recall {moved_r:.3f}.",
        "",
        "## Drift, live half as it is",
        "",
        *drift_lines(calm),
        "",
        f"## Drift, live half with {SHIFTED} shifted by one training standard deviation",
        "",
        *drift_lines(moved),
        "",
        "## Shadow: version 2 beside version 1, every request, both phases",
        "",
        f"Rows compared {shadow['rows_compared']:,} (skipped {shadow['rows_skipped']}); "
        f"outcomes {json.dumps(shadow['outcomes'])}; agreement {shadow['agreement']:.3f}; "
        f"anomaly rate active {shadow['anomaly_rate']['active']:.3f}, shadow "
        f"{shadow['anomaly_rate']['shadow']:.3f}.",
        "",
        "## Feedback: the live half's labels sent back",
        "",
        f"POST /models/cardio/feedback with the {len(X_live)} labels of the first phase: "
        f"received {feedback['received']}, matched {feedback['matched']}. Confusion counts in "
        f"/metrics (`aeserve_feedback_labels_total`, version 1): {json.dumps(confusion)}.",
        "",
        *evaluation_lines(evaluations),
        "",
        "## V2 infer with the anomaly outputs",
        "",
        "```json",
        json.dumps(v2["outputs"]),
        "```",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
