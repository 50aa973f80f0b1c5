"""Write scikit-learn's Wisconsin breast-cancer data as a CSV with a `malignant` label column.

Benign tumours (357 rows) are the normal class a model trains on; malignant ones (212 rows) are
the anomalies it must flag. 30 real-valued features, named as scikit-learn names them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer


def write_csv(out: Path) -> Path:
    data = load_breast_cancer()
    malignant = (data.target == 0).astype(np.int64)  # scikit-learn: 0 = malignant, 1 = benign
    out.parent.mkdir(parents=True, exist_ok=True)
    header = ",".join([*data.feature_names, "malignant"])
    table = np.column_stack([data.data, malignant])
    fmt = ["%.10g"] * data.data.shape[1] + ["%d"]
    np.savetxt(out, table, delimiter=",", header=header, comments="", fmt=fmt)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/breast_cancer.csv"))
    print(write_csv(parser.parse_args().out))


if __name__ == "__main__":
    main()
