"""Every default of training, in one place, each with the reason for its value.

The option dataclasses (`TrainConfig`, `VariantOptions`, `TrainOptions`) take their field defaults
from here; `aeserve train --help` shows them from here; an option left unset (None) is resolved by
`resolve_plan` (training/plan.py) with the rules at the end of this module. Nothing else states a
default.

Most values were chosen on the detection benchmark: `python -m bench.defaults_sweep` on the
protocol of bench/quality.py (16 data sets, seeds 0, 1, 2), one configuration for every data set;
docs/variants.md has the comparison that chose them. They were chosen for the plain autoencoder;
the other variants use the same training defaults.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from aeserve.training.model import MEMBER_VARIANTS

# --- The network ------------------------------------------------------------------------------

#: The plain autoencoder: the variant the other defaults were chosen for.
VARIANT = "ae"

#: A funnel of 64 and 32 units to a code of 8 units, whatever the number of inputs. With 8 inputs
#: or fewer the code is no bottleneck, yet a short training run of a ReLU stack does not reach the
#: identity: on the benchmark's data sets with 5 to 9 features, a code of 8 scored 0.01 higher
#: mean ROC-AUC than a code one narrower than the input. (For the VAE: a 64-32 trunk and the code
#: as its latent.)
HIDDEN_SIZES: tuple[int, ...] = (64, 32, 8)

#: ReLU hidden units, chosen on the benchmark.
ACTIVATION = "relu"

#: sparse-kl compares mean activations with a target in (0, 1), so it needs sigmoid units.
KL_SPARSITY_ACTIVATION = "sigmoid"

#: Squared error on standardized inputs; the sigmoid decoder (cross-entropy on inputs in [0, 1])
#: is the classic formulation's alternative, by flag.
DECODER_ACTIVATION = "identity"

#: Untied weights: several members need them (see `MEMBER_VARIANTS`), and the benchmark chose
#: the defaults untied. Tying halves the weights and is a mild regularizer in itself.
TIED_WEIGHTS = False

#: Networks trained side by side, scores averaged, where the variant allows it (`MEMBER_VARIANTS`
#: without tied weights; one network otherwise). Averaging removes much of the seed-to-seed noise
#: that makes single networks on small data sets swing by several points; five members train in
#: about one and a half times the time of one, and eight scored no better.
MEMBERS = 5

#: How a row's reconstruction errors become its score: "residual_cauchy", the Cauchy
#: log-likelihood of each feature's residual at that feature's typical held-out error
#: (training/export.py says why), or "mse_scaled", the mean squared error. On the benchmark
#: (seeds 0-2, the same five-member models scored both ways) the Cauchy score won in three of
#: the four cells and lost 0.002 in the fourth, mean ROC-AUC: one-class 0.8392 vs 0.8413 on the
#: selection sets and 0.8060 vs 0.7940 on the confirmation sets; unsupervised 0.7344 vs 0.7325
#: and 0.7102 vs 0.6794. Contaminated training data gains most: anomalies the network learned
#: to rebuild still stand out on the features it rebuilds well for everything else. Members'
#: squared errors are averaged before the logarithm: one logarithm per feature, not per member
#: and feature, within 0.0025 of the per-member terms and a fifth cheaper to serve (4,096
#: rows, one thread: 12.8 -> 9.8 ms).
#: The VAE's `--vae-score elbo` replaces it with the negative ELBO.
SCORE = "residual_cauchy"

# --- Calibration ------------------------------------------------------------------------------

#: Share of the normal rows held out when the model is a single network (several members are
#: cross-fitted instead, and withhold no row: on the benchmark, withholding a fifth of the rows
#: cost 0.015 of mean ROC-AUC, which small data sets of a few hundred rows feel most).
VALIDATION_FRACTION = 0.2

#: The 0.99 quantile of held-out normal scores: about 1 % of normal rows are flagged.
THRESHOLD_RULE = "quantile:0.99"

#: Scaling follows the decoder: standard scaling for the identity decoder (squared error), min-max
#: to [0, 1] for the sigmoid decoder (its cross-entropy needs targets in [0, 1]).
SCALING_BY_DECODER = {"identity": "standard", "sigmoid": "minmax"}

# --- The training loop (TrainConfig) ----------------------------------------------------------

#: Short runs: on the benchmark they score as well as long ones and cost a fraction (20 epochs
#: and at least 250 steps: 0.842 mean ROC-AUC in 0.40 s; 40 and 500: 0.843 in 0.85 s). An
#: autoencoder that trains long learns to rebuild the rare, unusual rows too.
EPOCHS = 20
#: At least this many gradient steps: a few hundred rows make one or two batches an epoch, too
#: few updates in `EPOCHS` epochs (0: exactly the epochs asked for).
MIN_STEPS = 250
#: Adam's learning rate and the mini-batch size, chosen on the benchmark.
LEARNING_RATE = 3e-3
BATCH_SIZE = 128
#: Epochs without a validation improvement of `MIN_DELTA` before stopping. Set when runs were 80
#: epochs long; short runs rarely stop early, and keep their best epoch (`RESTORE_BEST`) instead.
PATIENCE = 80
MIN_DELTA = 1e-5
#: Keep the weights of the epoch with the best held-out loss, not the last: chosen on the
#: benchmark (the difference is within its noise at 20 epochs, 0.007 at 40).
RESTORE_BEST = True
#: One seed drives initialisation, shuffling and the split: runs are reproducible by default.
SEED = 0
#: A progress bar on the terminal (`--quiet` turns it off).
PROGRESS = True
#: Share of each batch's worst-reconstructed rows left out of the gradient after
#: `TRIM_WARMUP_EPOCHS` epochs, so that anomalies hidden in unlabelled training data do not teach
#: the model to rebuild them. Off by default; worth trying on unlabelled data.
TRIM_FRACTION = 0.0
TRIM_WARMUP_EPOCHS = 5
#: When positive, cap the epochs at about this many gradient steps (but at least `MIN_EPOCHS`),
#: so large data sets do not pay for every epoch. Off by default: the runs are short already.
STEP_BUDGET = 0
MIN_EPOCHS = 10

# --- The regularized variants (VariantOptions; each read by its own variant only) -------------

#: sparse-l1: weight lambda of the L1 penalty on the code layer.
L1_WEIGHT = 1e-3
#: sparse-kl: target mean activation p (Ng's sparse autoencoder) and weight of the KL penalty.
SPARSITY_TARGET = 0.05
SPARSITY_WEIGHT = 1.0
#: denoising: additive Gaussian corruption of sigma 0.2 in scaled (standardized) units.
NOISE = "gaussian"
NOISE_LEVEL = 0.2
#: contractive: weight lambda of the encoder Jacobian's squared Frobenius norm.
CONTRACTION_WEIGHT = 1e-2
#: vae: beta = 1 is the plain ELBO (Kingma and Welling).
VAE_BETA = 1.0
#: vae: the reconstruction error at mu means the same thing for every variant and its per-feature
#: errors add up to it (exact explanations); it ties the negative ELBO on clean training data
#: (bench/vae_score.py).
VAE_SCORE = "reconstruction"

# --- Where the model goes ---------------------------------------------------------------------

#: The model repository that `aeserve serve` reads by default; AESERVE_MODELS_DIR, which `serve`
#: honours, overrides it for `train` too (`default_models_dir`), so the two agree.
MODELS_DIR = Path("models")
MODELS_DIR_ENV = "AESERVE_MODELS_DIR"
DESCRIPTION = ""


def invoked_command() -> str:
    """The command line that trained the model, for its card: `aeserve` and this process's
    arguments."""
    return shlex.join(["aeserve", *sys.argv[1:]])


# --- Rules: the defaults that depend on other choices -----------------------------------------


def default_hidden_sizes(input_dim: int, variant: str = VARIANT) -> list[int]:
    """`HIDDEN_SIZES`, for every input width and variant."""
    return list(HIDDEN_SIZES)


def default_activation(variant: str) -> str:
    """`ACTIVATION`, except `KL_SPARSITY_ACTIVATION` for sparse-kl."""
    return KL_SPARSITY_ACTIVATION if variant == "sparse-kl" else ACTIVATION


def default_members(variant: str, tied_weights: bool = TIED_WEIGHTS) -> int:
    """`MEMBERS` where the variant allows several (untied) networks, else one."""
    return MEMBERS if variant in MEMBER_VARIANTS and not tied_weights else 1


def default_scaling(decoder_activation: str) -> str:
    """The scaling the decoder's loss needs (`SCALING_BY_DECODER`)."""
    return SCALING_BY_DECODER.get(decoder_activation, SCALING_BY_DECODER[DECODER_ACTIVATION])


def default_models_dir() -> Path:
    """AESERVE_MODELS_DIR when set (the folder `aeserve serve` reads), else `MODELS_DIR`."""
    return Path(os.environ.get(MODELS_DIR_ENV) or MODELS_DIR)
