"""Chapter 05's experiment: its runs and the per-seed effects of its claims (hand-built tables)."""

import math

import numpy as np
import pandas as pd
import pytest

from saelib.lm.experiment import ARCHITECTURES, PARTS, SWEEP_PARTS, LMExperiment, effects, tasks
from saelib.parameters import chapter_claims

KS = [8, 32]


def _exp(**kw):
    params = dict(model_name="m", layers=[2, 6], layer_ks=KS, width=64, widths=[16, 32, 64, 128],
                  ks=KS, relu_l1=[1.0, 3.0], gated_l1=[2.0, 4.0], jumprelu_l0=[0.1, 1.0],
                  jumprelu_bandwidth=0.5, jumprelu_threshold=1.0, mlp_l1=[0.5, 2.0],
                  mlp_hidden=[32], scaling_l1=1.0, n_steps=100, batch_size=64, lr=1e-3,
                  aux_k=16, dead_after_tokens=512, ito_solver="gradient_pursuit", device="cpu",
                  unused_parameter=1)  # fmt: skip
    return LMExperiment.from_params(params | kw, d_model=8)


def test_runs_configure_each_variant():
    exp = _exp()
    mlp_topk = exp.run("mlp_topk", 8, seed=3)
    assert (mlp_topk.sae.architecture, mlp_topk.sae.mlp_output, mlp_topk.sae.k) == (
        "mlp",
        "topk",
        8,
    )
    assert mlp_topk.train.aux_k == 16 and mlp_topk.train.sparsity_coeff == 0.0
    mlp = exp.run("mlp", 2.0, seed=3)
    assert (mlp.sae.mlp_output, mlp.train.sparsity_coeff, mlp.train.aux_k) == ("relu", 2.0, None)
    jump = exp.run("jumprelu", 0.1, seed=3)
    assert (jump.sae.bandwidth, jump.sae.init_threshold) == (0.5, 1.0)
    wide = exp.run("topk", 32, seed=3, width=128, aux_k=None)
    assert (wide.sae.d_sae, wide.sae.d_in, wide.sae.seed, wide.train.aux_k) == (128, 8, 3, None)
    assert wide.labels == {"variant": "topk", "knob": 32}
    assert exp.hooks == ["blocks.2.hook_resid_post", "blocks.6.hook_resid_post"]
    assert {r.train.precision for r in (mlp_topk, mlp, jump, wide)} == {"float32"}  # default
    bf16 = _exp(precision="bfloat16")
    assert {bf16.run(a, 8, seed=0).train.precision for a in ARCHITECTURES} == {"bfloat16"}


def test_every_variant_is_in_one_sweep_part_and_every_part_runs_per_seed():
    covered = [a for archs in SWEEP_PARTS.values() for a in archs]
    assert sorted(covered) == sorted(ARCHITECTURES)
    assert set(SWEEP_PARTS) < set(PARTS)
    assert tasks([0, 1]) == [(s, p) for p in PARTS for s in (0, 1)]


def _seed_table(seed, gap=0.05):
    """One seed's runs: every frontier a straight line in log L0; TopK ``gap`` below ReLU."""
    rows = []
    l0s = {8: 8.0, 32: 32.0}
    topk = 0.30 - gap
    base = {"relu": 0.30, "topk": topk, "batchtopk": topk - 0.02, "jumprelu": topk,
            "gated": 0.28, "mlp": 0.31, "mlp_topk": topk + 0.01}  # fmt: skip
    for arch, fvu0 in base.items():
        for knob, l0 in l0s.items():
            fvu = fvu0 - 0.05 * np.log2(l0 / 8)
            row = dict(group="sweep", variant=arch, architecture=arch, knob=knob, l0=l0, fvu=fvu,
                       width=64, dead_fraction=0.1 if knob == 8 else 0.0, hook="deep")  # fmt: skip
            if arch in ("topk", "relu"):
                delta = 0.5 - 0.1 * np.log2(l0 / 8) - (0.03 if arch == "topk" else 0.0)
                row |= dict(delta_loss=delta, ce_loss_recovered=0.9, ce_recovered_mean=0.7)
            rows.append(row)
    for arch, knob in (("topk", 32), ("relu", 1.0)):
        for width in (16, 32, 128):
            rows.append(dict(group="scaling", variant=arch, architecture=arch, knob=knob,
                             width=width, fvu=0.2 * (width / 64) ** -0.25, l0=10.0))  # fmt: skip
    # the sweep's ReLU at scaling_l1 = 1.0, the width-64 point of ReLU's curve (L0 above TopK's)
    rows.append(dict(group="sweep", variant="relu", architecture="relu", knob=1.0, l0=64.0,
                     fvu=0.2, width=64, hook="deep"))  # fmt: skip
    for name, dead in (("no aux-k", 0.4), ("no init tricks", 0.25), ("neither", 0.6)):
        rows.append(
            dict(group="dead", variant="topk", knob=8, dead_variant=name, dead_fraction=dead)
        )
    for knob in KS:
        rows.append(dict(group="ito", variant="topk+ITO", knob=knob, fvu=0.1,
                         delta_loss=0.2 if knob == 32 else math.nan))  # fmt: skip
        rows.append(dict(group="layer", variant="topk", knob=knob, l0=float(knob),
                         fvu=0.1 if knob == 8 else 0.15, delta_loss=0.6 if knob == 8 else 0.2,
                         hook="shallow"))  # fmt: skip
    return pd.DataFrame(rows).assign(seed=seed)


def test_effects_against_hand_computed_values():
    exp = _exp()
    table = pd.concat([_seed_table(0), _seed_table(1)], ignore_index=True)
    out = effects(exp, table)
    assert set(out) == {c.id for c in chapter_claims("05_lm_scaling")}
    assert out["topk_beats_relu"] == pytest.approx([0.05, 0.05])
    assert out["batchtopk_beats_topk"] == pytest.approx([0.02, 0.02])
    assert out["jumprelu_vs_topk"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert out["mlp_topk_beats_topk"] == pytest.approx([-0.01, -0.01])
    assert out["topk_beats_relu_loss"] == pytest.approx([0.03, 0.03])
    assert out["zero_ablation_flatters"] == pytest.approx([0.2, 0.2])
    assert out["auxk_fewer_dead"] == pytest.approx([0.3, 0.3])  # 0.4 - 0.1 (the sweep's run)
    assert out["init_fewer_dead"] == pytest.approx([0.15, 0.15])
    topk32 = 0.30 - 0.05 - 0.05 * 2
    assert out["splice_costs_loss"] == pytest.approx([0.5 - 0.2 - 0.03] * 2)
    assert out["ito_beats_encoder"] == pytest.approx([((0.25 - 0.1) + (topk32 - 0.1)) / 2] * 2)
    assert out["ito_beats_encoder_loss"] == pytest.approx([0.5 - 0.2 - 0.03 - 0.2] * 2)
    assert out["shallow_lower_fvu"] == pytest.approx([min(0.25 - 0.1, topk32 - 0.15)] * 2)
    assert out["shallow_higher_loss"] == pytest.approx([min(0.6 - 0.47, 0.2 - 0.27)] * 2)
    # ReLU's curve is exactly 0.2 (w / 64)^-0.25: a pure power law
    assert out["relu_width_gain"] == pytest.approx([0.25, 0.25], rel=1e-6)
    # TopK's width-64 point (the sweep's run at k = 32) lies below that law: a steeper fall
    # from 32 to 64 than elsewhere, so the last slope differs from the first
    fvu = np.array([0.2 * 0.25**-0.25, 0.2 * 0.5**-0.25, topk32, 0.2 * 2**-0.25])
    slopes = np.diff(np.log(fvu)) / np.log(2)
    assert out["topk_flattens"] == pytest.approx([slopes[-1] - slopes[0]] * 2)
