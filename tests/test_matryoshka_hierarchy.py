"""Matryoshka absorbs less than BatchTopK on hierarchical features, at the same L0.

The published expectation (Bussmann et al. 2025, arXiv:2503.17547, sections 1 and 4;
Nabeshima 2024): when a child feature fires only with its parent, a BatchTopK SAE lets the
child's latent absorb the parent's direction, so the parent's latent goes silent whenever a
child fires; Matryoshka's inner prefix must reconstruct the input on its own, so the parent
latents in it keep firing. Absorption is measured as chapter 04 does (Chanin et al. 2024,
arXiv:2409.14507; ``saelib.toys.absorption.chanin_absorption``): the full-absorption rate,
and the miss rate of each parent's main latent on samples where one of its children fires.

Data (``SyntheticData``, fixed before any run): 32 features in 16 dimensions, Zipf
frequencies, 4 parents (the most frequent features) with 4 mutually exclusive children each
(P(a child | parent) = 0.2 each, so 80% of a parent's firings carry a child), magnitudes 1 as
in Chanin et al.'s toy models. The true mean L0 is 3.1, of which 1.23 per sample is a
parent firing with a child.

Why this must show absorption if anything does: both SAEs have k = 2 (matched L0). The
true dictionary cannot reconstruct at L0 2, but the absorbing one (parent latents for a
parent alone, parent-plus-child latents for a pair) does so exactly at L0 3.1 - 1.23 =
1.88 <= 2. So BatchTopK's optimum *is* absorption, and Matryoshka's inner loss (first prefix:
4 latents, one per parent; the setting it is designed for, not a test of mis-sized
prefixes) is the only thing standing against it.

Thresholds, chosen from that argument before running: BatchTopK's full-absorption rate at
least 0.5 (a guard: if the baseline does not absorb, the comparison says nothing and the
test fails saying so), and Matryoshka's full-absorption and parent-miss rates at most half of
BatchTopK's (the effect must be large, not a shift within training noise). Two SAE seeds,
each of which must pass.

Measured once those were fixed (saelib at this commit, CPU): the test fails, and is kept as
a strict xfail so that it turns red the day it passes. Seed 0: BatchTopK full absorption
0.48 (under the guard), Matryoshka 0.34; parent miss 0.58 against 0.55. Seed 1: full
absorption 0.54 against 0.09 (the expected effect), but parent miss 0.61 against 0.38 (not
half). With k = 2 below the true L0 of 3.1, Matryoshka cannot keep all four parents firing:
its prefix latents hedge (best cosine to a parent 0.63-0.91), and for some parents the
closest atom is outside the prefix. The expectation is not confirmed at this size.
"""

import pytest

from saelib.data import TensorBatches
from saelib.saes import SAEConfig, inference, make_sae
from saelib.toys.absorption import chanin_absorption
from saelib.toys.feature_metrics import parent_latents
from saelib.toys.synthetic import SyntheticConfig, SyntheticData
from saelib.training import TrainConfig, Trainer

D, N_FEATURES, N_PARENTS, K, STEPS = 16, 32, 4, 2, 3000
DATA = SyntheticConfig(
    n_features=N_FEATURES, d=D, mean_active=3.0, frequency="zipf", magnitude="constant",
    n_parents=N_PARENTS, children_per_parent=4, child_prob=0.2, exclusive_children=True,
    seed=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def hierarchy():
    data = SyntheticData(DATA)
    return data, data.sample(16384, generator=1), data.sample(8192, generator=2)


def absorption_of(arch: str, seed: int, hierarchy) -> dict[str, float]:
    data, train, test = hierarchy
    extra = {"matryoshka_widths": (N_PARENTS, N_FEATURES)} if arch == "matryoshka" else {}
    sae = make_sae(SAEConfig(D, N_FEATURES, arch, k=K, seed=seed, **extra))
    cfg = TrainConfig(n_steps=STEPS, lr=3e-3, lr_decay_steps=STEPS // 5, progress=False)
    Trainer(sae, cfg).fit(TensorBatches(train.x, 128, seed=seed))
    with inference(sae):
        f = sae.encode(test.x)
    W = sae.W_dec.detach()
    main = parent_latents(data.dictionary, W, data.parents)
    ab = chanin_absorption(test.codes, f, data.dictionary, W, data.parents, data.children, main)
    l0 = float((f != 0).sum(1).float().mean())
    return {"full": ab.full_rate, "parent_miss": ab.parent_miss, "l0": l0}


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="measured: not confirmed at this size (docstring)"
)
@pytest.mark.parametrize("seed", [0, 1])
def test_matryoshka_absorbs_less_than_batchtopk(hierarchy, seed):
    btk = absorption_of("batchtopk", seed, hierarchy)
    mat = absorption_of("matryoshka", seed, hierarchy)
    print(f"seed {seed}: batchtopk {btk}, matryoshka {mat}")
    assert btk["full"] >= 0.5, f"BatchTopK does not absorb here, nothing to compare: {btk}"
    assert mat["full"] <= 0.5 * btk["full"], (mat, btk)
    assert mat["parent_miss"] <= 0.5 * btk["parent_miss"], (mat, btk)
