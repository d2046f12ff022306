"""The protocols, the chapter's summaries and figures: hand-made tables and the chapter's
former inline code as the reference (kept verbatim, hence its long lines)."""

# ruff: noqa: E501

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from saelib.plotting import probing as plots  # noqa: E402
from saelib.probing import protocols as P  # noqa: E402
from saelib.probing.layers import probe_layers, scarce_probes  # noqa: E402
from saelib.probing.tasks import ProbingTask  # noqa: E402


def _row(task, layer, pooling, method, val, test):
    return {"task": task, "hook": f"blocks.{layer}.x", "layer": layer, "pooling": pooling,
            "method": method, "val_auc": val, "test_auc": test}  # fmt: skip


def test_families_and_best_rows_first_wins_ties():
    table = pd.DataFrame(
        [
            _row("a", 1, "last", "dense", 0.7, 0.60),
            _row("a", 1, "mean", "pca32", 0.8, 0.65),
            _row("a", 1, "last", "sae_k1", 0.9, 0.50),
            _row("a", 2, "mean", "sae_k16", 0.9, 0.55),
            _row("a", 2, "mean", "dense", 0.8, 0.90),
        ]
    )
    table = P.with_family(table)
    assert table["family"].tolist() == ["dense", "pca", "sae (best k)", "sae (best k)", "dense"]
    best = P.best_rows(table, ["task", "family"])
    assert best.set_index("family")["test_auc"].to_dict() == {
        "sae (best k)": 0.50,  # a tie at 0.9: the first row
        "dense": 0.90,
        "pca": 0.65,
    }
    layer, auc = P.peaks(table, ["a"])
    assert layer.loc["a"].to_dict() == {"dense": 2, "pca": 1, "sae (best k)": 1}
    assert auc.loc["a", "dense"] == 0.90
    grid = P.dense_grid(table, ["a"])
    assert grid.loc["a"].to_dict() == {1: 0.60, 2: 0.90}


def _choices():
    """Two tasks; 'b' gains from the SAE probe under the per-task protocol only."""
    rows = []
    for task, auc in (("a", {"fw": 0.8, "fo": 0.8, "pw": 0.9, "po": 0.9}),
                      ("b", {"fw": 0.6, "fo": 0.7, "pw": 0.95, "po": 0.85})):  # fmt: skip
        for protocol, p in (("fixed layer", "f"), ("per-task layer", "p")):
            for cand, c in (("with SAE", "w"), ("without SAE", "o")):
                sae = c == "w" and auc[p + "w"] != auc[p + "o"]
                rows.append({"task": task, "protocol": protocol, "candidates": cand,
                             "layer": 3, "pooling": "mean",
                             "method": "sae_k4" if sae else "dense",
                             "val_auc": 0.5, "test_auc": auc[p + c]})  # fmt: skip
    return pd.DataFrame(rows)


def test_protocol_summary_by_hand():
    q = _choices()
    wide = P.protocol_auc(q, ["b", "a"])
    assert wide.index.tolist() == ["b", "a"]
    assert wide.loc["b", ("per-task layer", "with SAE")] == 0.95
    s = P.protocol_summary(q, ["a", "b"])
    assert s.loc["fixed layer", "mean test AUC, with SAE"] == pytest.approx(0.7)
    assert s.loc["fixed layer", "mean test AUC, without SAE"] == pytest.approx(0.75)
    assert s.loc["per-task layer", "mean test AUC, with SAE"] == pytest.approx(0.925)
    assert s["tasks where SAE probe chosen"].to_dict() == {"fixed layer": 1, "per-task layer": 1}
    assert s["tasks improved"].to_dict() == {"fixed layer": 0, "per-task layer": 1}
    assert s["tasks worsened"].to_dict() == {"fixed layer": 1, "per-task layer": 0}


def _tasks_and_features(n=160, n_groups=20, seed=0):
    """Two tasks over the same texts and two hooks: 'strong' lives at layer 5 in x and in
    latent 3, 'weak' at layer 1 in x only."""
    rng = np.random.default_rng(seed)
    texts = [f"t{i}" for i in range(n)]
    groups = np.array([f"g{i % n_groups}" for i in range(n)])
    y_strong = np.tile([0, 1], n // 2)
    y_weak = (np.arange(n) % n_groups < n_groups // 2).astype(np.int64)
    feats = {}
    for layer in (1, 5):
        x = rng.normal(size=(n, 6))
        f = np.abs(rng.normal(size=(n, 10))) * 0.1
        if layer == 5:
            x[:, 0] += 2.0 * y_strong
            f[:, 3] += 2.0 * y_strong
        else:
            x[:, 1] += 1.0 * y_weak
        for pooling in ("last", "mean"):
            x_p = x + (0.1 * rng.normal(size=x.shape) if pooling == "last" else 0)
            feats[(f"blocks.{layer}.hook_resid_post", pooling)] = {
                "x": torch.tensor(x_p).float(), "f": torch.tensor(f).float()}  # fmt: skip
    tasks = [
        ProbingTask("strong", texts, y_strong, groups),
        ProbingTask("weak", texts, y_weak, groups),
    ]
    return tasks, feats, {t: i for i, t in enumerate(texts)}


def _reference(table, scarce, names, fvu):
    """The chapter's inline code before it moved into the library (commit 2157306)."""
    family_of = table["method"].where(~P.is_sae(table["method"]), "sae (best k)")
    table = table.assign(family=family_of.where(~family_of.str.startswith("pca"), "pca"))
    best_rows = (table.sort_values("val_auc", ascending=False, kind="stable")
                 .groupby(["task", "family"], sort=False).head(1))  # fmt: skip
    best_layer = best_rows.pivot(index="task", columns="family", values="layer").loc[names]
    best_auc = best_rows.pivot(index="task", columns="family", values="test_auc").loc[names]
    q = P.quivers(table, None)
    fixed = int(q[q["protocol"] == "fixed layer"]["layer"].iloc[0])
    wide = q.pivot_table(index="task", columns=["protocol", "candidates"], values="test_auc").loc[
        names
    ]
    gain = pd.DataFrame(
        {
            p: wide[(p, "with SAE")] - wide[(p, "without SAE")]
            for p in ("fixed layer", "per-task layer")
        }
    )
    picked_sae = q[q["candidates"] == "with SAE"].assign(sae=lambda d: P.is_sae(d["method"]))
    summary = pd.DataFrame({
        "mean test AUC, without SAE": wide.xs("without SAE", axis=1, level=1).mean(),
        "mean test AUC, with SAE": wide.xs("with SAE", axis=1, level=1).mean(),
        "tasks where SAE probe chosen": picked_sae.groupby("protocol")["sae"].sum(),
        "tasks improved": (gain > 0).sum(),
        "tasks worsened": (gain < 0).sum(),
    })  # fmt: skip
    scarce_q = pd.concat(
        [
            P.quivers(g, fixed).assign(n_train=n, draw=d)
            for (n, d), g in scarce.groupby(["n_train", "draw"])
        ],
        ignore_index=True,
    )
    scarce_summary = (scarce_q.groupby(["n_train", "protocol", "candidates"])["test_auc"].mean()
                      .unstack(["protocol", "candidates"]))  # fmt: skip
    dense_fixed = scarce[(scarce["layer"] == fixed) & (scarce["method"] == "dense")]
    sae_fixed = scarce[(scarce["layer"] == fixed) & P.is_sae(scarce["method"])]
    by_method = (
        pd.concat([dense_fixed, sae_fixed])
        .groupby(["n_train", "method"])["test_auc"]
        .mean()
        .unstack()
    )
    full = summary["mean test AUC, with SAE"] - summary["mean test AUC, without SAE"]
    val_means = q[q["candidates"] == "without SAE"].groupby("protocol")["val_auc"].mean()
    small = scarce_summary.loc[min(scarce["n_train"])]
    figures = {
        "n_best_layers": int(best_layer["dense"].nunique()),
        "fixed_without": summary.loc["fixed layer", "mean test AUC, without SAE"],
        "per_task_with": summary.loc["per-task layer", "mean test AUC, with SAE"],
        "gain_fixed": full["fixed layer"],
        "sae_chosen_per_task": int(summary.loc["per-task layer", "tasks where SAE probe chosen"]),
        "layer_gain": summary.loc["per-task layer", "mean test AUC, without SAE"] - summary.loc["fixed layer", "mean test AUC, without SAE"],
        "layer_val_gain": val_means["per-task layer"] - val_means["fixed layer"],
        "scarce_per_task_with": small[("per-task layer", "with SAE")],
        "worsened_fixed": int(summary.loc["fixed layer", "tasks worsened"]),
        "scarce_gain_max": max((scarce_summary[(p, "with SAE")] - scarce_summary[(p, "without SAE")]).max()
                               for p in ("fixed layer", "per-task layer")),
        "scarce_dense_lead_min": (by_method["dense"] - by_method.drop(columns="dense").max(axis=1)).min(),
        "sae_below_dense": int((best_auc["sae (best k)"] < best_auc["dense"]).sum()),
        "dense_layer_max": int(best_layer["dense"].max()),
        "sae_fvu_min": fvu.min(),
    }  # fmt: skip
    return table, best_layer, best_auc, fixed, q, summary, scarce_summary, by_method, figures


def test_the_library_gives_the_numbers_of_the_former_inline_code():
    tasks, feats, index = _tasks_and_features()
    names = ["weak", "strong"]
    table = probe_layers(tasks, feats, index, ks=(1, 4), Cs=(0.1, 1.0), n_components=4,
                         progress=False)  # fmt: skip
    scarce = scarce_probes(tasks, feats, index, [8, 16], 2, ks=(1, 4), Cs=(0.1, 1.0),
                           pooling="mean", progress=False)  # fmt: skip
    fvu = pd.Series([0.3, 0.1])
    ref = _reference(table, scarce[scarce["pooling"] == "mean"], names, fvu)
    ref_table, ref_layer, ref_auc, ref_fixed, ref_q, ref_summary, ref_scarce, ref_by, ref_fig = ref

    table = P.with_family(table)
    pd.testing.assert_frame_equal(table, ref_table)
    best_layer, best_auc = P.peaks(table, names)
    pd.testing.assert_frame_equal(best_layer, ref_layer)
    pd.testing.assert_frame_equal(best_auc, ref_auc)
    fixed = P.choose_fixed_layer(table)
    assert fixed == ref_fixed
    q = P.quivers(table, fixed)
    pd.testing.assert_frame_equal(q, ref_q)
    summary = P.protocol_summary(q, names)
    pd.testing.assert_frame_equal(summary, ref_summary)
    scarce_summary, by_method = P.scarce_quivers(scarce, fixed)
    pd.testing.assert_frame_equal(scarce_summary, ref_scarce)
    pd.testing.assert_frame_equal(by_method, ref_by)
    assert ref_fig["n_best_layers"] == 2  # the two tasks peak at their own layers


def test_figures_draw_what_they_are_given():
    q = _choices()
    wide = P.protocol_auc(q, ["a", "b"])
    fig, ax = plt.subplots()
    assert plots.quiver_bars(ax, wide, "fixed layer") is ax
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.8, 0.7, 0.8, 0.6])
    assert ax.get_ylim() == (0.5, 1.0)
    grid = pd.DataFrame([[0.5, 0.9], [0.7, 0.6]], index=["a", "b"], columns=[1, 5])
    fig, ax = plt.subplots()
    plots.layer_heatmap(ax, grid, "dense")
    np.testing.assert_array_equal(ax.images[0].get_array(), grid.to_numpy())
    curves = P.with_family(
        pd.DataFrame(
            [
                _row("a", layer, pooling, "dense", 0.5, 0.6 + 0.01 * layer)
                for layer in (1, 5)
                for pooling in ("last", "mean")
            ]
        )  # fmt: skip
    )
    fig, axes = plt.subplots(1, 3, squeeze=False)
    plots.auc_by_layer_grid(axes, curves, ["a", "b"])
    assert len(axes[0, 0].lines) == 2 and [ln.get_linestyle() for ln in axes[0, 0].lines] == [
        "--",
        "-",
    ]
    assert not axes[0, 2].axison and axes[0, 0].get_ylabel() == "test AUC"
    summary = pd.DataFrame({("fixed layer", "without SAE"): [0.6, 0.7],
                            ("fixed layer", "with SAE"): [0.55, 0.7]}, index=[8, 16])  # fmt: skip
    fig, ax = plt.subplots()
    plots.scarce_lines(ax, summary, "fixed layer")
    assert [list(ln.get_ydata()) for ln in ax.lines] == [[0.6, 0.7], [0.55, 0.7]]
    plt.close("all")
