"""Claims and verdicts: the interval against a hand computation, the three verdicts on
samples whose answer is known, and the errors of a chapter that disagrees with its claims."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from saelib.claims import (
    Claim,
    Effects,
    chosen_on_other_seeds,
    claims_table,
    glue_values,
    interval,
    load,
    rounded,
    verdict,
    verdicts,
)
from saelib.parameters import chapter_claims, chapter_schema


def claim(direction="greater", threshold=0.01, id="c"):
    return Claim(id, "A beats B", "Someone 2024, arXiv:0000.00000", "B minus A", direction,
                 threshold)  # fmt: skip


def test_interval_matches_a_hand_computed_t_interval():
    x = [0.1, 0.3, 0.2, 0.5, 0.4]
    mean, low, high, n = interval(x)
    half = 2.7764451051977987 * np.std(x, ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    assert n == 5 and mean == pytest.approx(0.3)
    assert (low, high) == pytest.approx((0.3 - half, 0.3 + half))


def test_interval_leaves_out_nan_and_needs_two_samples():
    assert interval([0.2, math.nan, 0.4])[3] == 2
    mean, low, high, n = interval([0.2, math.nan])
    assert (mean, n) == (0.2, 1) and math.isnan(low) and math.isnan(high)
    assert interval([0.3, 0.3, 0.3])[1:3] == (0.3, 0.3)


@pytest.mark.parametrize(
    ("samples", "direction", "expected"),
    [
        ([0.05, 0.06, 0.04, 0.05, 0.07], "greater", "supported"),  # well above 0.01
        ([-0.05, -0.04, -0.06, -0.05, -0.03], "greater", "contradicted"),  # reversed
        ([0.002, 0.004, 0.003, 0.001, 0.002], "greater", "contradicted"),  # real but too small
        ([0.05, -0.04, 0.02, -0.01, 0.0], "greater", "inconclusive"),  # straddles
        ([0.05], "greater", "inconclusive"),  # one seed
        ([-0.05, -0.04, -0.06, -0.05, -0.03], "less", "supported"),
        ([0.05, 0.06, 0.04, 0.05, 0.07], "less", "contradicted"),
    ],
)
def test_verdicts_on_samples_with_a_known_answer(samples, direction, expected):
    table = verdicts([claim(direction)], {"c": samples})
    assert table.loc["c", "verdict"] == expected


def test_verdicts_follow_a_sampling_model():
    """Effects drawn around a true mean: far above the threshold -> supported in nearly
    every draw; at the threshold -> inconclusive about 95% of the time (the interval's level)."""
    rng = np.random.default_rng(0)
    far = [verdicts([claim()], {"c": rng.normal(0.05, 0.01, 5)}).loc["c", "verdict"]
           for _ in range(200)]  # fmt: skip
    at = [verdicts([claim()], {"c": rng.normal(0.01, 0.01, 5)}).loc["c", "verdict"]
          for _ in range(400)]  # fmt: skip
    assert far.count("supported") >= 195
    assert 0.91 <= at.count("inconclusive") / len(at) <= 0.99


def test_verdict_uses_the_t_quantile():
    c = claim(threshold=0.0)
    x = np.array([0.01, 0.03, 0.02, -0.005, 0.02])
    t = x.mean() / (x.std(ddof=1) / math.sqrt(5))
    p = 2 * stats.t.sf(abs(t), 4)
    _, low, high, _ = interval(x)
    assert (verdict(c, low, high) == "supported") == (p < 0.05)


def test_a_chapter_that_disagrees_with_its_claims_fails_by_name():
    with pytest.raises(ValueError, match="'c'"):
        verdicts([claim()], {})
    with pytest.raises(ValueError, match="'other'"):
        verdicts([claim()], {"c": [0.1, 0.2], "other": [0.1]})


def test_load_refuses_bad_declarations():
    good = {"id": "c", "statement": "s", "source": "src", "metric": "m", "direction": "greater",
            "threshold": 0.0}  # fmt: skip
    assert load([good])[0].counts_if == "> 0"
    with pytest.raises(ValueError, match="unique"):
        load([good, good])
    with pytest.raises(ValueError, match="keys"):
        load([{**good, "tolerance": 1}])
    with pytest.raises(ValueError, match="direction"):
        load([{**good, "direction": "up"}])
    with pytest.raises(ValueError, match="claim c"):
        load([{k: v for k, v in good.items() if k != "source"}])


def test_rounded_has_no_negative_zero():
    table = verdicts([claim()], {"c": [-0.001, -0.002, 0.0]})
    assert rounded(table).to_string().count("-0.00") == 0


def test_tables_and_glue_values():
    table = verdicts([claim()], {"c": [0.05, 0.06, 0.04]})
    values = glue_values(table)
    assert values["c_verdict"] == "supported" and values["c_n"] == 3
    assert values["c_low"] < values["c_effect"] < values["c_high"]
    assert list(claims_table([claim()]).columns)[:2] == ["claim", "source"]


@pytest.mark.parametrize("chapter", ["01_sae_zoo", "02_amortisation_gap"])
def test_chapters_declare_sourced_claims(chapter):
    claims = chapter_claims(chapter)
    assert len(claims) >= 4
    assert len(chapter_schema(chapter)["claims"]) == len(claims)


def test_chosen_on_other_seeds_by_hand():
    # seed 10: the others give a (2+3)/2=2.5, b (4-1)/2=1.5 -> a -> 9.0
    gains = pd.DataFrame({"a": [9.0, 2.0, 3.0], "b": [0.0, 4.0, -1.0]}, index=[10, 11, 12])
    # seed 11: others a (9+3)/2=6, b (0-1)/2=-0.5 -> a -> 2.0
    # seed 12: others a (9+2)/2=5.5, b (0+4)/2=2 -> a -> 3.0
    assert chosen_on_other_seeds(gains).tolist() == [9.0, 2.0, 3.0]
    gains = pd.DataFrame({"a": [1.0, 0.0, 0.0], "b": [5.0, 1.0, 1.0]})
    # seed 0: others a 0, b 1 -> b -> 5.0; seed 1: others a 0.5, b 3 -> b -> 1.0
    assert chosen_on_other_seeds(gains).tolist() == [5.0, 1.0, 1.0]


def test_chosen_on_other_seeds_nan_and_ties():
    gains = pd.DataFrame({"a": [np.nan, 1.0, 1.0], "b": [2.0, 1.0, 1.0]})
    # seed 0: a mean 1, b mean 1: tie -> first column a -> NaN at seed 0
    out = chosen_on_other_seeds(gains)
    assert math.isnan(out[0]) and out[1] == 1.0 and out[2] == 1.0
    only_nan = pd.DataFrame({"a": [np.nan, np.nan], "b": [1.0, np.nan]})
    assert math.isnan(chosen_on_other_seeds(only_nan)[1])  # b has no value on seed 0
    assert math.isnan(chosen_on_other_seeds(pd.DataFrame({"a": [1.0]}))[0])  # one seed


def test_effects_collects_per_claim_in_order_and_keeps_nan():
    e = Effects()
    e.add("a", 1)
    e.add("b", np.float32(0.5))
    e.add("a", math.nan)  # a seed that could not measure "a": kept, verdicts drops it
    e.add("a", -2.25)
    out = e.to_dict()
    assert list(out) == ["a", "b"]
    assert out["a"][0] == 1.0 and math.isnan(out["a"][1]) and out["a"][2] == -2.25
    assert out["b"] == [0.5] and all(type(v) is float for v in out["a"] + out["b"])
    # verdicts consumes it: mean of 1 and -2.25 over n = 2, NaN left out
    table = verdicts([claim(id="a"), claim(id="b")], out)
    assert table.loc["a", "n"] == 2 and table.loc["a", "effect"] == pytest.approx(-0.625)


def test_effects_returns_a_copy_and_a_claim_never_added_is_absent():
    e = Effects()
    e.add("a", 1.0)
    first = e.to_dict()
    first["a"].append(9.0)
    assert e.to_dict() == {"a": [1.0]}
    with pytest.raises(ValueError, match=r"\['b'\]"):
        verdicts([claim(id="a"), claim(id="b")], e.to_dict())


def test_effects_with_claims_refuses_an_undeclared_name():
    e = Effects([claim(id="a")])
    e.add("a", 0.0)
    with pytest.raises(ValueError, match="effect name must be a declared claim id.*'typo'"):
        e.add("typo", 1.0)
    assert e.to_dict() == {"a": [0.0]}
