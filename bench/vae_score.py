"""Which score ranks anomalies better for the VAE: reconstruction error at mu, or negative ELBO?

Trains the `vae` variant with default options once per data set, seed and setting of the protocol
(bench/protocol.py), exports it with the ELBO score, and reads both scores from the same ONNX
graph (`score` is the negative ELBO per feature; the mean of `feature_errors` is the reconstruction
score). Writes bench/results/vae_score.md.

    python -m bench.vae_score [--datasets 6_cardio 14_glass ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from sklearn.metrics import roc_auc_score

from aeserve.training.data import Dataset
from aeserve.training.objectives import VariantOptions
from aeserve.training.pipeline import TrainOptions, train_and_export
from aeserve.training.trainer import TrainConfig
from bench.protocol import dataset_paths, splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "vae_score.md")
    args = parser.parse_args()
    rows: list[tuple[str, str, float, float]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as models_dir:
        for path in dataset_paths(only=args.datasets):
            for split in splits(path):
                data = Dataset(X=split.X_fit, y=None,
                               feature_names=[f"x{i}" for i in range(split.X_fit.shape[1])],
                               source=path.name)
                outcome = train_and_export(data, TrainOptions(
                    name="vae", models_dir=Path(models_dir), variant="vae", command="bench",
                    variant_options=VariantOptions(vae_score="elbo"),
                    train=TrainConfig(seed=split.seed, progress=False)))
                session = ort.InferenceSession(str(outcome.path / "model.onnx"))
                elbo, errors = session.run(["score", "feature_errors"],
                                           {"x": split.X_test.astype(np.float32)})
                rows.append((split.dataset, split.setting,
                             roc_auc_score(split.y_test, errors.mean(axis=1)),
                             roc_auc_score(split.y_test, elbo)))
                print(f"{split.dataset} seed {split.seed} {split.setting}: "
                      f"recon {rows[-1][2]:.3f} elbo {rows[-1][3]:.3f}", flush=True)
    lines = ["# VAE: reconstruction score vs negative ELBO", "",
             "ROC-AUC, mean over seeds 0, 1, 2; protocol of bench/protocol.py; default VAE "
             "options; both scores from one exported ONNX graph. Reproduce: "
             "`python -m bench.vae_score`.", ""]
    for setting in ("one-class", "unsupervised"):
        lines += [f"## {setting}", "", "| dataset | reconstruction | negative ELBO |",
                  "|---|---:|---:|"]
        picked = [r for r in rows if r[1] == setting]
        names = list(dict.fromkeys(r[0] for r in picked))
        recon_means, elbo_means = [], []
        for name in names:
            recon = float(np.mean([r[2] for r in picked if r[0] == name]))
            elbo = float(np.mean([r[3] for r in picked if r[0] == name]))
            recon_means.append(recon)
            elbo_means.append(elbo)
            lines.append(f"| {name} | {recon:.3f} | {elbo:.3f} |")
        lines += [f"| **mean** | **{np.mean(recon_means):.4f}** | **{np.mean(elbo_means):.4f}** |",
                  ""]
    lines.append(f"Wall time {time.perf_counter() - started:.0f} s.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
