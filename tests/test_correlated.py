"""Chapter 04's experiment module: helpers by hand, and a tiny run that yields every claim."""

import math

import pandas as pd
import pytest
import torch

from saelib.parameters import chapter_claims
from saelib.toys import correlated as co
from saelib.toys import dictionaries

TINY = dict(
    n_features=32, d=16, mean_active=3.0, zipf_exponent=0.5, correlated_pairs=4,
    pair_cofire_prob=0.9, n_parents=4, children_per_parent=2, child_prob=0.25, n_train=2048,
    n_eval=512, n_steps=20, batch_size=64, lr=0.003, relu_l1=[0.3, 1.0], topk_ks=[2, 4],
    jumprelu_l0=[0.03, 0.1], jumprelu_bandwidth=0.1, l1=0.3, topk_k=2, jumprelu_coeff=0.1,
    ortho_coeffs=[0.1, 1.0], ortho_powers=[1.0, 3.0], ortho_claim_coeff=1.0, widths=[0.5, 2.0],
    chance_draws=2, hedging_d=8, hedging_child_prob=0.8, hedging_l1=0.05, probe_n=2048,
    probe_per_kind=2, probe_or_size=2, probe_ks=[1, 2], device="cpu",
)  # fmt: skip


def test_related_share():
    # 4 features: 6 pairs; one co-occurring pair and one parent with one child
    assert co.related_share(4, 1, 1, 1) == pytest.approx(2 / 6)


def test_reference_at_interpolates_in_log_l0_and_refuses_to_extrapolate():
    ref = pd.DataFrame({"l0": [1.0, 100.0], "fvu": [0.5, 0.1]})
    assert co.reference_at(ref, 10.0, "fvu") == pytest.approx(0.3)
    assert math.isnan(co.reference_at(ref, 200.0, "fvu"))


def test_chance_mmcs_rises_with_width():
    data = co.CorrelatedExperiment.from_params(TINY).data(0)
    chance = dictionaries.chance_mmcs
    assert chance(data.dictionary, 8, 0, 3) < chance(data.dictionary, 128, 0, 3)


def test_chance_mmcs_by_hand():
    # in d = 1 every unit atom is +1 or -1, so every true atom is matched at |cos| 1
    true = torch.tensor([[1.0], [-1.0]])
    assert dictionaries.chance_mmcs(true, 3, seed=0, draws=2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="draws"):
        dictionaries.chance_mmcs(true, 3, seed=0, draws=0)


def test_tasks_order_costliest_part_first():
    assert co.tasks([0, 1])[:2] == [(0, co.PARTS[0]), (1, co.PARTS[0])]


def test_a_tiny_run_gives_every_declared_claim_an_effect_per_seed():
    exp = co.CorrelatedExperiment.from_params(TINY)
    runs, probes = co.collect([co.run_task(exp, task) for task in co.tasks([0])])
    assert set(probes["coder"]) == {"ideal", "dense", "ReLU", "TopK", "JumpReLU"}
    assert {"absorption_full", "parent_miss", "unmatched_composite"} <= set(runs.columns)
    nested = runs[runs["variant"].isin(co.NESTING)]
    assert sorted(nested.groupby("variant")["knob"].apply(sorted).tolist()) == [[2, 4], [2, 4]]
    effects = co.effects(exp, runs, probes)
    assert sorted(effects) == sorted(c.id for c in chapter_claims("04_correlated_features"))
    assert all(len(v) == 1 for v in effects.values())
