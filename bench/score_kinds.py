"""One trained default model per split, scored several ways: the choice of the default score.

Each split of the quality protocol trains the default five cross-fitted members once; the test rows
are then scored by every rule below from the same networks, so the differences are the scores'
alone. docs/variants.md ("The score") quotes the output.

    python -m bench.score_kinds [--seeds 0 1 2] [--settings one-class unsupervised] [--csv F]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors  # noqa: E402

from aeserve.training import defaults  # noqa: E402
from aeserve.training.model import AutoencoderConfig  # noqa: E402
from aeserve.training.preprocessing import fit_scaler  # noqa: E402
from aeserve.training.residual_scale import floored as _floored  # noqa: E402
from aeserve.training.trainer import TrainConfig, fold_assignment, train_autoencoder  # noqa: E402
from bench.protocol import (  # noqa: E402
    SEEDS,
    Split,
    dataset_paths,
    group_table,
    leave_one_group_out,
    splits,
)


def _hotelling(codes_fit: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Mean over members of each code's Mahalanobis distance to the members' training codes."""
    distances = []
    for fit, rows in zip(codes_fit, codes, strict=True):
        precision = np.linalg.inv(np.cov(fit.T) + 1e-3 * np.eye(fit.shape[1]))
        centred = rows - fit.mean(axis=0)
        distances.append(np.einsum("ij,jk,ik->i", centred, precision, centred))
    return np.mean(distances, axis=0)


def disagreement_scores(y_fit: np.ndarray, y_test: np.ndarray, z_test: np.ndarray,
                        s_held_out: np.ndarray) -> dict[str, np.ndarray]:
    """The members' mean squared error is the error of their mean reconstruction plus their
    spread (disagreement) on the row: rules that weigh the spread apart. Ensembles disagree most
    far from the training data, so the spread alone might find anomalies that the mean
    reconstruction rebuilds (rows between clusters)."""
    spread_fit = ((y_fit - y_fit.mean(axis=0)) ** 2).mean(axis=0)
    spread_test = ((y_test - y_test.mean(axis=0)) ** 2).mean(axis=0)
    bias_test = (y_test.mean(axis=0) - z_test) ** 2
    return {
        "cauchy_spread_counted_twice": np.log1p((bias_test + 2 * spread_test)
                                                / s_held_out).mean(axis=1),
        "cauchy_of_spread_alone": np.log1p(spread_test
                                           / _floored(np.median(spread_fit, axis=0))).mean(axis=1),
    }


def _tail(held_out: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each value's tail probability among the held-out normal rows' values (never 0)."""
    ranked = np.sort(held_out)
    above = len(ranked) - np.searchsorted(ranked, values, side="left")
    return (above + 1) / (len(ranked) + 1)


def local_code_scores(code_fit: np.ndarray, code_test: np.ndarray, folds: np.ndarray,
                      recon_held_out: np.ndarray, recon_test: np.ndarray,
                      neighbours: int = 5, centroids: int = 64,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """A local density in code space beside the reconstruction: each member's distance from a
    row's code to its k-th nearest training code (or to the nearest of a few k-means centroids,
    the version a graph could carry), or its local outlier factor among them (the ratio of its
    neighbours' density to its own, which is what wins ALOI in the input space: LOF 0.72, kNN
    0.64). Reconstruction finds rows off the normal rows' manifold; a code far from every
    training code finds rows on it but between its clusters (ALOI's local anomalies), which the
    decoder rebuilds. The two are combined by their tail probabilities
    among held-out rows (the larger, or Fisher's sum of logs), so that a term that knows nothing
    about a data set adds as little noise as it can."""
    knn_held, knn_test, cen_held, cen_test = (np.zeros(len(folds)), [], np.zeros(len(folds)), [])
    lof_held, lof_test = np.zeros(len(folds)), []
    for k, (fit, rows) in enumerate(zip(code_fit, code_test, strict=True)):
        trained, held = folds != k, folds == k
        index = NearestNeighbors(n_neighbors=neighbours).fit(fit[trained])
        knn_held[held] = index.kneighbors(fit[held])[0][:, -1]
        knn_test.append(index.kneighbors(rows)[0][:, -1])
        means = KMeans(n_clusters=min(centroids, int(trained.sum())), n_init=1,
                       random_state=seed).fit(fit[trained])
        cen_held[held] = means.transform(fit[held]).min(axis=1)
        cen_test.append(means.transform(rows).min(axis=1))
        lof = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(fit[trained])
        lof_held[held] = -lof.score_samples(fit[held])
        lof_test.append(-lof.score_samples(rows))
    knn_test_mean, cen_test_mean = np.mean(knn_test, axis=0), np.mean(cen_test, axis=0)
    lof_test_mean = np.mean(lof_test, axis=0)
    p_recon = _tail(recon_held_out, recon_test)
    out = {"code_knn_alone": knn_test_mean, "code_centroid_alone": cen_test_mean,
           "code_lof_alone": lof_test_mean}
    for name, held, test in (("knn", knn_held, knn_test_mean),
                             ("centroid", cen_held, cen_test_mean),
                             ("lof", lof_held, lof_test_mean)):
        p_code = _tail(held, test)
        out[f"cauchy_or_code_{name}_max"] = -np.log(np.minimum(p_recon, p_code))
        out[f"cauchy_and_code_{name}_fisher"] = -np.log(p_recon) - np.log(p_code)
        out[f"cauchy_plus_code_{name}_over_median"] = (
            recon_test / max(np.median(recon_held_out), 1e-12)
            + test / max(np.median(held), 1e-12))  # duplicated rows: a median distance of 0
    return out


def scale_rules(held_out: np.ndarray) -> dict[str, np.ndarray]:
    """Candidate per-feature scales s_j of the Cauchy score, from the held-out squared errors
    [N, d] (each row's from the member that never saw it). The default, the median, is the size
    of the zero mass, not of the residual, on a feature whose errors are mostly zero (a rare
    binary or near-constant feature): a tiny s_j then turns its small errors into the largest
    terms of every row's score. The others ask for the typical size in ways that see the tail."""
    median = np.median(held_out, axis=0)
    mean = held_out.mean(axis=0)
    winsorised = np.minimum(held_out, np.quantile(held_out, 0.99, axis=0)).mean(axis=0)
    return {
        "median": _floored(median),
        **{f"median_floor_{share:g}_of_mean": np.maximum(median, share * median.mean() + 1e-6)
           for share in (0.03, 0.1, 0.2, 0.3, 0.5)},
        "quantile_0.75_floor_0.1_of_mean": np.maximum(
            np.quantile(held_out, 0.75, axis=0),
            0.1 * np.quantile(held_out, 0.75, axis=0).mean() + 1e-6),
        "median_floor_median_feature": np.maximum(median, np.median(median) + 1e-6),
        "quantile_0.75": _floored(np.quantile(held_out, 0.75, axis=0)),
        "quantile_0.9": _floored(np.quantile(held_out, 0.9, axis=0)),
        "mean": _floored(mean),
        "mean_winsorised_0.99": _floored(winsorised),
        "median_or_mean_share_0.25": _floored(np.maximum(median, 0.25 * winsorised)),
        "geometric_mean_with_average": _floored(np.sqrt(median * median.mean()) + 1e-12),
        "one_scale_for_all": np.full_like(median, median.mean() + 1e-6),
    }


def scale_scores(held_out: np.ndarray, e_test: np.ndarray) -> dict[str, np.ndarray]:
    """The Cauchy score of the members' mean squared error under each rule of `scale_rules`."""
    members_mean = e_test.mean(axis=0)
    out = {f"scale={rule}": np.log1p(members_mean / scale).mean(axis=1)
           for rule, scale in scale_rules(held_out).items()}
    out["scale=none, squared error"] = members_mean.mean(axis=1)
    return out


def linear_member_scores(Z: np.ndarray, folds: np.ndarray, z_test: np.ndarray,
                         e_fit_held_out: np.ndarray, e_test: np.ndarray,
                         shares: tuple[float, ...] = (0.9, 0.95)) -> dict[str, np.ndarray]:
    """A linear autoencoder (the principal components holding `share` of the variance) as one
    more member beside the five networks, cross-fitted like them: member k's components come
    from the rows outside fold k. Its squared errors join the networks' in the mean before the
    Cauchy score, so the score stays one reconstruction error; a linear member cannot memorise
    a row, and on wide data with few rows it holds the normal rows' subspace where a narrow
    non-linear code overfits (PCA's reconstruction is the best peer on the embeddings)."""
    from sklearn.decomposition import PCA

    out = {}
    n_members = int(folds.max()) + 1
    for share in shares:
        held = np.empty_like(Z)
        tests = []
        for k in range(n_members):
            pca = PCA(n_components=share, svd_solver="full").fit(Z[folds != k])
            inside = Z[folds == k]
            held[folds == k] = (pca.inverse_transform(pca.transform(inside)) - inside) ** 2
            tests.append((pca.inverse_transform(pca.transform(z_test)) - z_test) ** 2)
        linear_test = np.mean(tests, axis=0)
        scale = _floored(np.median(held, axis=0))
        out[f"linear_{share:g}_alone"] = np.log1p(linear_test / scale).mean(axis=1)
        joint_held = (e_fit_held_out * n_members + held) / (n_members + 1)
        joint_test = (e_test.sum(axis=0) + linear_test) / (n_members + 1)
        out[f"networks_and_linear_{share:g}"] = np.log1p(
            joint_test / _floored(np.median(joint_held, axis=0))).mean(axis=1)
        # Each kind's Cauchy score over its own scales, summed: neither kind's errors dominate.
        networks = np.log1p(e_test.mean(axis=0) / _floored(np.median(e_fit_held_out, axis=0)))
        out[f"networks_plus_linear_{share:g}_cauchy"] = (
            networks.mean(axis=1) + out[f"linear_{share:g}_alone"])
    return out


def local_scale_scores(code_fit: np.ndarray, code_test: np.ndarray, held_out: np.ndarray,
                       e_test: np.ndarray, neighbours: tuple[int, ...] = (10, 30),
                       chunk: int = 512) -> dict[str, np.ndarray]:
    """Each feature's residual scale taken among the row's neighbours in code space (the local
    normalisation of ARES): s_j(x) = the median held-out error of feature j over the k training
    rows whose codes (all members' side by side) lie nearest x's, floored as the global scales
    are. A residual is then judged against what the model gets wrong in that part of the data,
    not everywhere: a row in a cluster the model rebuilds well stands out by less error."""
    fit = code_fit.transpose(1, 0, 2).reshape(code_fit.shape[1], -1)
    test = code_test.transpose(1, 0, 2).reshape(code_test.shape[1], -1)
    members_mean = e_test.mean(axis=0)
    median = np.median(held_out, axis=0)
    floor = 0.1 * median.mean() + 1e-6
    out = {}
    for k in neighbours:
        index = NearestNeighbors(n_neighbors=min(k, len(fit))).fit(fit)
        local = np.empty_like(members_mean)
        for start in range(0, len(test), chunk):
            rows = index.kneighbors(test[start:start + chunk], return_distance=False)
            local[start:start + chunk] = np.median(held_out[rows], axis=1)
        local = np.maximum(local, floor)
        out[f"local_scale_k{k}"] = np.log1p(members_mean / local).mean(axis=1)
        shrunk = np.sqrt(local * np.maximum(median, floor))  # halfway to the global scale
        out[f"local_scale_k{k}_halfway_to_global"] = np.log1p(members_mean / shrunk).mean(axis=1)
    return out


#: Families of rules: the score kinds, the local code-space scores (costly: k-means and
#: neighbour searches per member), the residual scales, a linear member beside the networks,
#: residual scales local to a row's neighbourhood in code space.
FAMILIES = ("kinds", "local", "scales", "linear", "local_scales")


def scores(split: Split, families: tuple[str, ...] = FAMILIES) -> dict[str, np.ndarray]:
    """Every score rule's test scores, from one default model trained on `split`."""
    members = defaults.MEMBERS
    scaler = fit_scaler(split.X_fit, "standard")
    Z = scaler.transform(split.X_fit).astype(np.float32)
    folds = fold_assignment(len(Z), members, split.seed)
    model = train_autoencoder(
        Z, None, AutoencoderConfig(input_dim=Z.shape[1], hidden_sizes=list(defaults.HIDDEN_SIZES),
                                   activation=defaults.ACTIVATION,
                                   members=members),
        TrainConfig(seed=split.seed, progress=False), folds=folds).model
    with torch.no_grad():
        def codes_and_reconstructions(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            code, z_hat = model(torch.as_tensor(rows, dtype=torch.float32))
            return code.numpy(), z_hat.numpy()  # [K, N, c], [K, N, d]

        z_test = scaler.transform(split.X_test).astype(np.float32)
        code_fit, y_fit = codes_and_reconstructions(Z)
        code_test, y_test = codes_and_reconstructions(z_test)
    e_fit, e_test = (y_fit - Z) ** 2, (y_test - z_test) ** 2
    held_out = e_fit[folds, np.arange(len(Z))]  # each row's error from the member that never saw it
    s_held_out = _floored(np.median(held_out, axis=0))
    out = scale_scores(held_out, e_test) if "scales" in families else {}
    if "linear" in families or "local_scales" in families:
        out["residual_cauchy"] = np.log1p(
            e_test.mean(axis=0) / _floored(np.median(held_out, axis=0))).mean(axis=1)
    if "linear" in families:
        out.update(linear_member_scores(Z, folds, z_test, held_out, e_test))
    if "local_scales" in families:
        out.update(local_scale_scores(code_fit, code_test, held_out, e_test))
    if "kinds" not in families and "local" not in families:
        return out
    s_train = _floored(np.median(e_fit, axis=1).mean(axis=0))
    t2_fit, t2_test = _hotelling(code_fit, code_fit), _hotelling(code_fit, code_test)
    mse_fit, mse_test = e_fit.mean(axis=(0, 2)), e_test.mean(axis=(0, 2))
    cauchy_sum_test = np.log1p(e_test / s_held_out).mean(axis=0).sum(axis=1)
    residual_test = np.log1p(e_test.mean(axis=0) / s_held_out).mean(axis=1)
    residual_held_out = np.log1p(held_out / s_held_out).mean(axis=1)
    if "local" in families:
        out.update(local_code_scores(code_fit, code_test, folds, residual_held_out,
                                     residual_test, seed=split.seed))
    if "kinds" not in families:
        return out
    return {
        **out,
        "mse_scaled": mse_test,
        "residual_cauchy": residual_test,
        "cauchy_mean_of_member_terms": np.log1p(e_test / s_held_out).mean(axis=(0, 2)),
        "cauchy_train_scale": np.log1p(e_test / s_train).mean(axis=(0, 2)),
        "scaled_no_log": (e_test / s_held_out).mean(axis=(0, 2)),
        "hotelling_t2": t2_test,
        "mse_plus_t2": mse_test / np.median(mse_fit) + t2_test / np.median(t2_fit),
        "cauchy_plus_half_t2": cauchy_sum_test + 0.5 * t2_test,
        **disagreement_scores(y_fit, y_test, z_test, s_held_out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--settings", nargs="+", default=["one-class", "unsupervised"])
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = []
    for path in dataset_paths(only=args.datasets):
        for split in splits(path, tuple(args.seeds), tuple(args.settings)):
            for rule, values in scores(split, tuple(args.families)).items():
                rows.append({"dataset": split.dataset, "seed": split.seed,
                             "setting": split.setting, "score": rule,
                             "roc_auc": roc_auc_score(split.y_test, values),
                             "average_precision": average_precision_score(split.y_test,
                                                                          values)})
            if args.csv is not None:  # as it goes: a long run can be read before it ends
                pd.DataFrame(rows).to_csv(args.csv, index=False)
    frame = pd.DataFrame(rows)
    print(f"mean ROC-AUC over data sets, seeds {args.seeds}")
    print(group_table(frame, "score").round(4).to_string())
    print("\nleave one group out (rule chosen on the other two groups' mean ROC-AUC):")
    print(leave_one_group_out(group_table(frame, "score")).to_string(index=False))


if __name__ == "__main__":
    main()
