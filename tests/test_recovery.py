"""End to end: every architecture, trained on data with a planted dictionary, recovers it
(all but Matryoshka, a strict xfail with its measured numbers: see ``MATRYOSHKA_SHORT``;
it recovers as SAELens's own Matryoshka does on the same data, checked against the reference
run of ``benchmarks/planted_recovery.py``).

Data: 48 unit-norm Gaussian atoms in 24 dimensions (2x overcomplete), about 3 active per
sample with uniform frequencies and |N(0,1)| magnitudes. Each SAE has d_sae = 48.

Threshold: an untrained decoder scores MMCS of about 0.48 here (the best |cos| of a
true atom among 48 random directions in 24-d), asserted below as chance. Requiring
MMCS >= 0.9 (mean best angle under ~26 degrees) and a one-to-one Hungarian match >= 0.85
is far above chance and below what each architecture reaches with these settings
(0.93-0.99 measured; see the issue note), so it tests training rather than luck.
"""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import PLANTED

from saelib.data import TensorBatches
from saelib.evaluation import evaluate
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

D, N_FEATURES = 24, 48
SETTINGS = {  # architecture: (SAEConfig extras, sparsity coefficient, lr, steps)
    "relu": ({}, 0.3, 3e-3, 3000),
    "topk": ({"k": 3}, 0.0, 3e-3, 3000),
    "batchtopk": ({"k": 3}, 0.0, 3e-3, 3000),
    # the book's nesting (saelib.saes.matryoshka.prefix_widths(48)): prefixes of 3, 12 and 48
    "matryoshka": ({"k": 3, "matryoshka_widths": (3, 12, 48)}, 0.0, 3e-3, 3000),
    "jumprelu": ({"bandwidth": 0.1, "init_threshold": 0.1}, 0.3, 3e-3, 3000),
    "gated": ({}, 1.0, 3e-3, 3000),
    "mp": ({"mp_steps": 3}, 0.0, 3e-3, 3000),  # three pursuit steps, about 3 active features
    # the deep encoder and the decoder co-adapt more slowly: lower lr, more steps
    "mlp": ({"mlp_hidden": (96,)}, 0.15, 1e-3, 6000),
}


def test_chance_level(planted):
    train, _ = planted
    untrained = make_sae(SAEConfig(d_in=D, d_sae=N_FEATURES))
    chance = evaluate(untrained, train.x[:512], true_dictionary=train.dictionary)["mmcs"]
    assert 0.35 < chance < 0.6


MATRYOSHKA_SHORT = pytest.mark.xfail(
    strict=True,
    reason="measured: MMCS 0.80, Hungarian 0.76 (0.82 / 0.77 with prefixes (24, 48); aux-k "
    "changes nothing): on a flat dictionary the inner prefixes must reconstruct alone, so "
    "their latents become mixtures of features; SAELens's own Matryoshka reaches the same on "
    "this data (benchmarks/results/planted_recovery.md: MMCS 0.80, Hungarian 0.76), chapter "
    "01 finds the same at matched L0 (matryoshka_recovers_better contradicted)",
)


@pytest.mark.parametrize(
    "arch",
    [pytest.param(a, marks=MATRYOSHKA_SHORT) if a == "matryoshka" else a for a in SETTINGS],
)
def test_planted_dictionary_is_recovered(planted, arch):
    torch.manual_seed(0)
    train, test = planted
    extras, lam, lr, steps = SETTINGS[arch]
    sae = make_sae(SAEConfig(d_in=D, d_sae=N_FEATURES, architecture=arch, **extras))
    cfg = TrainConfig(
        n_steps=steps, lr=lr, lr_decay_steps=steps // 5, sparsity_coeff=lam, progress=False
    )
    Trainer(sae, cfg).fit(TensorBatches(train.x, 128, seed=0))
    row = evaluate(sae, test.x, true_dictionary=train.dictionary, true_codes=test.codes)
    print(f"{arch}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items()))
    assert row["mmcs"] >= 0.9
    assert row["hungarian_cos"] >= 0.85
    assert row["fvu"] < 0.5  # it reconstructs, too


REFERENCE = Path(__file__).parents[1] / "benchmarks" / "results" / "planted_recovery.json"
AS_SAELENS = 0.02  # the smallest difference the book's claims count (``counts if > 0.02``)


@pytest.fixture(scope="module")
def bench():
    """``benchmarks/planted_recovery.py`` as a module: its training helper and its table."""
    folder = str(REFERENCE.parents[1])
    sys.path.insert(0, folder)
    try:
        import planted_recovery
    finally:
        sys.path.remove(folder)
    return planted_recovery


def test_matryoshka_recovers_as_saelens_does(planted, bench):
    """saelib's Matryoshka recovers the planted dictionary at least as well as SAELens's own
    Matryoshka does (``benchmarks/planted_recovery.py``: same data, batch stream, settings and
    scorer, three initialisation seeds each): the mean MMCS and Hungarian cosine over the
    reference's seeds may trail SAELens's by at most ``AS_SAELENS``. The bar was fixed from the
    reference run alone, before this test was first run."""
    ref = json.loads(REFERENCE.read_text())
    assert ref["data"]["config"] == dataclasses.asdict(PLANTED), "reference made on other data"
    assert ref["settings"] == bench.SETTINGS, "the reference was made with other settings"
    train, test = planted
    ours = {"mmcs": [], "hungarian_cos": []}
    for seed in bench.SETTINGS["seeds"]:
        sae = bench.train_saelib_sae("matryoshka", seed, train.x)
        row = evaluate(sae, test.x, true_dictionary=train.dictionary, true_codes=test.codes)
        for metric, values in ours.items():
            values.append(row[metric])
    for metric, values in ours.items():
        scores = ref["saelib"]["scores"]
        theirs = [scores[f"saelens/matryoshka_{seed}"][metric] for seed in bench.SETTINGS["seeds"]]
        mean_ours, mean_theirs = sum(values) / len(values), sum(theirs) / len(theirs)
        print(f"{metric}: saelib {mean_ours:.3f}, SAELens {mean_theirs:.3f}")
        assert mean_ours >= mean_theirs - AS_SAELENS, (metric, values, theirs)


def test_reference_table_is_generated_from_the_json(bench):
    """The table the book includes is the one the benchmark writes from the committed JSON."""
    written = REFERENCE.with_suffix(".md").read_text()
    assert written == bench.markdown(json.loads(REFERENCE.read_text())), (
        "benchmarks/results/planted_recovery.md differs from the JSON: rerun the benchmark"
    )
