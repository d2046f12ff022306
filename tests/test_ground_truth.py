"""Tests for saelib.toys.ground_truth: scores of SAEs built on known dictionaries."""

import pytest
import torch

from saelib.data import TensorBatches
from saelib.evaluation import Run
from saelib.saes import SAEConfig
from saelib.toys.composed import composed_sets
from saelib.toys.ground_truth import (
    Truth,
    score,
    train_and_score,
    variant_runs,
)
from saelib.toys.synthetic import SyntheticConfig, SyntheticData
from saelib.toys.true_solution import objective, sae_with_dictionary
from saelib.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = composed_sets(1024, d=2, generator=0)
TRUTH = Truth(TOY.batch.dictionary, TOY.batch.x, TOY.batch.codes, composed=TOY.composed)
CFG = SAEConfig(d_in=2, d_sae=4)


def test_true_and_composed_dictionaries_score_as_expected():
    true_row = score(sae_with_dictionary(CFG, TOY.batch.dictionary), TRUTH, 0.1)
    assert true_row["mmcs"] == pytest.approx(1.0) and true_row["composite_fraction"] == 0
    assert true_row["fvu"] < 1e-10
    comp_row = score(sae_with_dictionary(CFG, TOY.composed), TRUTH, 0.1)
    assert comp_row["mmcs_composed"] == pytest.approx(1.0) and comp_row["composite_fraction"] == 1
    assert comp_row["mmcs"] == pytest.approx(2**-0.5, abs=1e-6)
    # at exact reconstruction the objective is lambda * L1: sqrt(2) E[max] < E[a + b]
    assert comp_row["objective"] < true_row["objective"]


def test_hierarchy_scores_of_the_exact_sae():
    data = SyntheticData(SyntheticConfig(n_features=6, d=16, mean_active=2.0, n_parents=2,
                                         children_per_parent=2, frequency="uniform"))  # fmt: skip
    batch = data.sample(4000, generator=1)
    truth = Truth(batch.dictionary, batch.x, batch.codes, parents=data.parents,
                  children=data.children)  # fmt: skip
    sae = sae_with_dictionary(SAEConfig(d_in=16, d_sae=6), batch.dictionary)
    with torch.no_grad():  # an encoder that recovers the true codes exactly: the pseudo-inverse
        sae.W_enc.copy_(torch.linalg.pinv(batch.dictionary))
    row = score(sae, truth, 0.0)
    assert row["absorption"] == 0 and row["parent_alone_miss"] == 0
    assert row["hedging_abs"] < 1e-5 and row["fvu"] < 1e-8


def test_score_leaves_the_mode_as_it_was():
    sae = sae_with_dictionary(CFG, TOY.batch.dictionary)
    for training in (True, False):
        sae.train(training)
        score(sae, TRUTH, 0.1)
        assert sae.training is training


def test_train_and_score_rows_and_start():
    runs = [Run(CFG, TrainConfig(n_steps=20, sparsity_coeff=0.1), {"seed": s}) for s in (0, 1)]
    table, saes = train_and_score(runs, lambda r: TensorBatches(TOY.batch.x, 64), TRUTH)
    assert list(table["seed"]) == [0, 1] and len(saes) == 2
    assert {"fvu", "l0", "mmcs", "composite_fraction", "objective"} <= set(table.columns)
    assert {"train_mse", "seconds"} <= set(table.columns)  # the sweep's own columns
    assert not any(sae.training for sae in saes)  # the sweep returns them in eval mode
    objectives = [objective(sae, TOY.batch.x, 0.1)["total"] for sae in saes]
    assert table["objective"].tolist() == objectives
    start = sae_with_dictionary(CFG, TOY.batch.dictionary)
    _, (trained,) = train_and_score(runs[:1], lambda r: TensorBatches(TOY.batch.x, 64), TRUTH,
                                    start=lambda r: start)  # fmt: skip
    assert trained is start


def test_variant_runs_are_seed_major_with_labels():
    train = TrainConfig(n_steps=5)
    variants = {"plain": (CFG, train), "wide": (SAEConfig(d_in=2, d_sae=8, seed=7), train)}
    runs = variant_runs(variants, [3, 4])
    assert [r.labels for r in runs] == [
        {"variant": v, "seed": s} for s in (3, 4) for v in ("plain", "wide")
    ]
    assert [(r.sae.d_sae, r.sae.seed) for r in runs] == [(4, 3), (8, 3), (4, 4), (8, 4)]
    assert all(r.train is train for r in runs)
