"""Chapter 03's experiment module: choices by hand, and every declared claim gets its effects."""

import pandas as pd
import pytest

from saelib.claims import verdicts
from saelib.parameters import chapter_claims
from saelib.toys import composition_run as cr

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(seed=3, n_seeds=2, n_train=512, n_val=256, n_eval=256, n_steps=20, batch_size=64,
            l1_coeffs=[0.1, 0.3], lrs=[0.003], l1=0.1, lr=0.003, correlations=[0.0, 1.0],
            dims=[2, 4], shapes=["2x3"], ortho_coeffs=[0.1, 1.0], ortho_powers=[1.0, 2.0],
            wide=[6], perturbation=0.1, topk_k=2, jumprelu_l0=0.01, jumprelu_bandwidth=0.05,
            mlp_hidden=[8])  # fmt: skip


def test_ortho_choice_by_hand():
    runs = pd.DataFrame({"coeff": [3.0, 0.1, 1.0, 0.3],
                         "val_fvu": [0.30, 0.10, 0.12, 0.11],
                         "val_composite_fraction": [0.0, 0.5, 0.25, 0.25]})  # fmt: skip
    # within 0.01 of plain (0.105): 0.1 and 0.3 (1.0 costs 0.015, 3.0 far more); lowest
    # composite fraction among them: 0.3
    assert cr.ortho_choice(runs, 0.105)["coeff"] == 0.3
    # nothing qualifies: the smallest weight
    assert cr.ortho_choice(runs, 0.0)["coeff"] == 0.1
    # ties go to the smallest weight
    tie = runs.assign(val_composite_fraction=[0.0, 0.25, 0.25, 0.25])
    assert cr.ortho_choice(tie, 0.105)["coeff"] == 0.1


def test_every_group_runs_and_every_claim_gets_one_effect_per_seed():
    exp = cr.CompositionExperiment.from_params(TINY)
    assert exp.seeds == (3, 4)
    runs, refs = cr.collect([cr.run_group(exp, g) for g in cr.tasks(exp)])
    assert set(runs["section"]) == {"grid", "correlated", "perturbed", "fixes", "dims"}
    assert (refs["bound"] <= refs["objective"] + 1e-9).all()
    effects = cr.effects(exp, runs, refs)
    claims = chapter_claims("03_toy_composition")
    assert sorted(effects) == sorted(c.id for c in claims)
    assert all(len(v) == 2 for v in effects.values())
    table = verdicts(claims, effects)
    assert len(table) == len(claims)


def test_unknown_group_is_refused():
    exp = cr.CompositionExperiment.from_params(TINY)
    with pytest.raises(ValueError, match="unknown group 'nope'"):
        cr.run_group(exp, "nope")
