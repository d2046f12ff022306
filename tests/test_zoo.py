"""Chapter 01's experiment: its runs, its parts, and the effects of its claims on tables
made by hand."""

import numpy as np
import pandas as pd
import pytest

from saelib.claims import verdicts
from saelib.parameters import chapter_claims
from saelib.toys import zoo

PARAMS = dict(
    n_features=16, d=8, mean_active=2.0, zipf_exponent=0.5, n_train=2048, n_eval=512,
    expansion=1.0, n_steps=20, batch_size=64, lr=2e-3, ks=[1, 2, 4], relu_l1=[0.1, 0.3, 1.0],
    gated_l1=[0.1, 0.3, 1.0], mlp_l1=[0.1, 0.3, 1.0], mlp_hidden=[16], jumprelu_l0=[0.01, 0.1, 1.0],
    jumprelu_bandwidth=0.1, dead_k=2, dead_offset_norm=3.0, aux_k=4, device="cpu",
)  # fmt: skip


def test_runs_cover_every_architecture_once_and_topk_relu_at_every_width():
    exp = zoo.ZooExperiment.from_params(PARAMS)
    runs = exp.runs(seed=0)
    archs = pd.Series([(r.sae.architecture, r.labels["width"]) for r in runs]).value_counts()
    for arch in ("topk", "relu"):
        assert all(archs[(arch, w)] == 3 for w in zoo.WIDTHS)
    for arch in ("batchtopk", "gated", "mlp", "jumprelu", "matryoshka", "mp"):
        assert archs[(arch, 1.0)] == 3 and (arch, 0.5) not in archs
    by_arch = {r.sae.architecture: r.sae for r in runs if r.labels["width"] == 1.0}
    assert by_arch["matryoshka"].matryoshka_widths == (1, 4, 16)  # d_sae 16: 1/16, 1/4, all
    assert sorted(r.sae.mp_steps for r in runs if r.sae.architecture == "mp") == [1, 2, 4]
    assert {r.sae.d_sae for r in runs} == {8, 16, 32}
    variants = {r.labels["variant"]: r.train for r in exp.dead_runs(seed=0)}
    assert variants["neither"].aux_k is None and not variants["neither"].init_encoder_from_decoder
    assert variants["both"].aux_k == 4 and variants["both"].init_b_dec == "geometric_median"


def test_tasks_split_seeds_into_parts_that_collect_back():
    exp = zoo.ZooExperiment.from_params(PARAMS)
    assert sorted(zoo.tasks([3, 4])) == sorted((s, p) for s in (3, 4) for p in zoo.PARTS)
    assert zoo.tasks([3, 4])[:2] == [(3, zoo.PARTS[0]), (4, zoo.PARTS[0])]  # costliest first
    tables = [zoo.run_task(exp, task) for task in zoo.tasks([0])]
    sweep, dead = zoo.collect(tables)
    assert len(sweep) == len(exp.runs(0)) and len(dead) == len(zoo.DEAD_VARIANTS)
    assert "history" not in dead.columns and sweep["history"].map(len).min() >= 1
    again = zoo.run_task(exp, (0, zoo.PARTS[2]))
    assert again["fvu"].tolist() == tables[2]["fvu"].tolist()  # seeded: same numbers


def _table(seed, fvu_shift=0.0, gamma_relu=0.8, dead_neither=0.5):
    rows = []
    for width in zoo.WIDTHS:
        for arch, l0s, fvus in (("topk", [1, 2, 4], [0.3, 0.2, 0.1]),
                                ("relu", [1, 2, 4], [0.4, 0.3, 0.2])):  # fmt: skip
            for l0, f in zip(l0s, fvus, strict=True):
                shift = fvu_shift if arch == "topk" else 0.0
                rows.append({"architecture": arch, "width": width, "knob": l0, "l0": float(l0),
                             "fvu": f + shift, "mmcs": 0.9 - 0.1 * l0,
                             "shrinkage": gamma_relu if arch == "relu" else 1.0})  # fmt: skip
    for arch, gamma in (("jumprelu", 1.0), ("gated", 0.98)):
        for l0, f in ((1, 0.31), (2, 0.21), (4, 0.11)):
            rows.append({"architecture": arch, "width": 1.0, "knob": l0, "l0": float(l0),
                         "fvu": f, "mmcs": 0.5, "shrinkage": gamma})  # fmt: skip
    # BatchTopK and MP-SAE on TopK's L0 grid; Matryoshka on BatchTopK's, offset by hand
    for arch, dfvu, dmmcs in (("batchtopk", 0.0, 0.0), ("matryoshka", 0.02, 0.05),
                              ("mp", -0.03, -0.1)):  # fmt: skip
        for l0, f in ((1, 0.3), (2, 0.2), (4, 0.1)):
            rows.append({"architecture": arch, "width": 1.0, "knob": l0, "l0": float(l0),
                         "fvu": f + dfvu, "mmcs": 0.9 - 0.1 * l0 + dmmcs,
                         "shrinkage": 1.0})  # fmt: skip
    sweep = pd.DataFrame(rows).assign(seed=seed)
    dead = pd.DataFrame({"variant": list(zoo.DEAD_VARIANTS), "dead_fraction":
                         [dead_neither, 0.1, 0.4, 0.05]}).assign(seed=seed)  # fmt: skip
    return sweep, dead


def test_effects_on_hand_made_tables():
    exp = zoo.ZooExperiment.from_params(PARAMS)  # ks 1, 2, 4; mean_active 2
    parts = [_table(s, fvu_shift=0.01 * s) for s in range(3)]
    sweep = pd.concat([p[0] for p in parts])
    dead = pd.concat([p[1] for p in parts])
    out = zoo.effects(exp, sweep, dead)
    assert out["topk_beats_relu"] == pytest.approx([0.1, 0.09, 0.08])
    assert out["topk_beats_relu_half"] == out["topk_beats_relu"]
    assert out["jumprelu_vs_topk"] == pytest.approx([-0.01, 0.0, 0.01])
    assert out["relu_shrinks"] == pytest.approx([0.2] * 3)
    assert out["gated_shrinks_less"] == pytest.approx([0.18] * 3)
    assert out["auxk_fewer_dead"] == pytest.approx([0.1] * 3)
    assert out["init_fewer_dead"] == pytest.approx([0.4] * 3)
    # k nearest the mean L0 (2) minus the largest k (4): 0.7 - 0.5
    assert out["denser_recovers_worse"] == pytest.approx([0.2] * 3)
    assert out["matryoshka_recovers_better"] == pytest.approx([0.05] * 3)
    assert out["matryoshka_costs_fidelity"] == pytest.approx([0.02] * 3)
    # TopK's FVU carries the seed's shift 0.01 * seed; MP's does not
    assert out["mp_more_faithful"] == pytest.approx([0.03, 0.04, 0.05])
    assert out["mp_recovers_worse"] == pytest.approx([0.1] * 3)
    table = verdicts(chapter_claims("01_sae_zoo"), out)
    assert table.loc["topk_beats_relu", "verdict"] == "supported"
    assert table.loc["jumprelu_vs_topk", "verdict"] == "inconclusive"


def test_final_drop_by_hand():
    history = [{"step": s, "mse": m} for s, m in enumerate([8, 8, 4, 4, 4, 2, 2, 2], 1)]
    out = zoo.final_drop(pd.DataFrame({"history": [history]}), window=2)
    assert out["plateau_median"] == pytest.approx(1 - 2 / 3)  # records 5-6 (mean 3) -> 7-8 (2)


def test_chance_mmcs_rises_with_width():
    exp = zoo.ZooExperiment.from_params(PARAMS)
    levels = [zoo.chance_mmcs(exp, w, seed=0) for w in zoo.WIDTHS]
    assert np.all(np.diff(levels) > 0) and levels[-1] < 1
