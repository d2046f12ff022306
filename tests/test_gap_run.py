"""Chapter 02's per-seed runner and the claims' effects (coding.gap_run)."""

import math

import pandas as pd
import pytest

from saelib.claims import verdicts
from saelib.coding import gap, gap_run
from saelib.parameters import chapter_claims

PARAMS = {
    "device": "cpu", "n_features": 8, "d": 4, "mean_active": 2.0, "zipf_exponent": 1.0,
    "n_train": 256, "n_val": 64, "n_test": 64, "n_steps": 12, "batch_size": 32, "lr": 1e-3,
    "lambdas": [0.1, 1.0], "mlp_hidden_one": [8], "mlp_hidden_two": [], "lista_steps": [2, 4],
    "mp_steps": [1, 2], "solver_max_iter": 20, "sc_rounds": [1, 2], "snapshot_steps": [5],
    "sweep_n_features": [8, 12], "ista_iters": [1, 4], "topk_n_features": 16, "topk_d": 8,
    "topk_mean_active": 2.0, "topk_k": 2, "topk_l0s": [1, 2, 4],
}  # fmt: skip


@pytest.fixture(scope="module")
def tables():
    return gap_run.collect([gap_run.run_part(PARAMS, task) for task in gap_run.tasks([0, 1])])


def test_run_seed_returns_every_table_for_its_seed(tables):
    assert set(tables) == {*gap_run.TABLES, "best"}
    for name in gap_run.TABLES:
        assert sorted(tables[name]["seed"].unique()) == [0, 1], name
    one = gap_run.collect([gap_run.run_seed(PARAMS, 1)])  # a seed whole = its parts
    for name in gap_run.TABLES:
        part = tables[name][tables[name]["seed"] == 1].reset_index(drop=True)
        pd.testing.assert_frame_equal(one[name], part, check_like=True)
    with pytest.raises(ValueError, match="part"):
        gap_run.run_part(PARAMS, (0, "everything"))
    with pytest.raises(ValueError, match="records of curves"):
        gap_run.collect([gap_run.run_part(PARAMS, (0, "known"))])


def test_effects_cover_the_declared_claims_and_follow_their_metrics(tables):
    effects = gap_run.claim_effects(tables, PARAMS)
    claims = chapter_claims("02_amortisation_gap")
    assert set(effects) == {c.id for c in claims}
    assert all(len(v) == 2 for v in effects.values())
    table = verdicts(claims, effects)  # raises if a claim lacked effects
    assert set(table["verdict"]) <= {"supported", "contradicted", "inconclusive"}
    best = tables["best"].set_index(["seed", "setting", "method"])["mcc"]
    for s in (0, 1):
        a, c = gap.KNOWN_DICTIONARY, gap.BOTH_UNKNOWN
        by_hand = best[s, a, "oracle"] - best[s, a, "SAE"]
        assert effects["gap_known_dictionary"][s] == pytest.approx(by_hand)
        by_hand = best[s, c, "LISTA (4 steps)"] - best[s, c, "SAE"]
        assert effects["lista_beats_sae"][s] == pytest.approx(by_hand)
        by_hand = best[s, c, "SAE+ITO"] - best[s, c, "SAE"]
        assert effects["ito_beats_sae_encoder"][s] == pytest.approx(by_hand)
    sweep = tables["sweep"].set_index(["seed", "N"])
    gap_at = sweep["oracle"] - sweep["SAE"]
    assert effects["gap_grows_with_n"][1] == pytest.approx(gap_at[1, 12] - gap_at[1, 8])
    topk = tables["topk"].set_index(["seed", "method", "l0"])["fvu"]
    by_hand = topk[0, "TopK encoder", 2] - topk[0, "gradient pursuit", 2]
    assert effects["ito_beats_topk_encoder"][0] == pytest.approx(by_hand)


def test_iterations_run_at_the_oracle_lambda_of_each_seed(tables):
    best = tables["best"]
    oracle = best[(best["setting"] == gap.KNOWN_DICTIONARY) & (best["method"] == "oracle")]
    chosen = oracle.set_index("seed")["lambda"]
    used = tables["iterations"].groupby("seed")["lambda"].unique()
    assert all(list(used[s]) == [chosen[s]] for s in (0, 1))


def test_matched_flops_effect_by_hand():
    sae = pd.DataFrame({"flops": [10.0, 100.0], "mcc": [0.5, 0.7]})
    sc = pd.DataFrame({"flops": [1000.0, 1.0], "mcc": [0.9, 0.6]})  # unsorted on purpose
    # budget 100 (the SAE's largest); sparse coding at log 100 is 2/3 of the way from 1 to 1000
    assert gap_run.matched_flops_effect(sae, sc) == pytest.approx(0.8 - 0.7)
    assert gap_run.matched_flops_effect(sc, sae) == pytest.approx(0.7 - 0.8)
    late = pd.DataFrame({"flops": [200.0, 400.0], "mcc": [0.9, 0.95]})
    assert math.isnan(gap_run.matched_flops_effect(sae, late))  # ranges do not overlap


def test_late_loss_drop_and_paper_table_by_hand(tables):
    curves = pd.DataFrame({
        "method": ["SAE"] * 6, "seed": [0, 0, 0, 1, 1, 1], "step": [2, 5, 10] * 2,
        "val_loss": [4.0, 2.0, 1.0, 3.0, 1.0, 1.0],
    })  # fmt: skip
    # half of 10 is step 5: drops 1 - 1/2 and 1 - 1/1, mean 0.25
    assert gap_run.late_loss_drop(curves).to_dict() == {"SAE": pytest.approx(0.25)}
    table = gap_run.paper_table(tables["best"])
    assert table["paper"].to_dict() == gap_run.PAPER_C and (table["n"] == 2).all()
