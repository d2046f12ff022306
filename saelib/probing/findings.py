"""The numbers the probing chapter's Findings quote and check, from its tables.

    figures = key_figures(summary, q, best_layer, best_auc, scarce_summary, by_method, fvu)

Plain Python ints and floats (``myst_nb.glue`` formats them), in the order the text uses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from saelib.probing.protocols import PROTOCOLS


def _plain(value) -> int | float:
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def key_figures(
    summary: pd.DataFrame,
    q: pd.DataFrame,
    best_layer: pd.DataFrame,
    best_auc: pd.DataFrame,
    scarce_summary: pd.DataFrame,
    by_method: pd.DataFrame,
    fvu: pd.Series,
) -> dict[str, int | float]:
    """The Findings' figures from the chapter's tables.

    ``summary`` and ``q``: :func:`~saelib.probing.protocols.protocol_summary` and
    ``quivers``; ``best_layer``/``best_auc``: ``peaks``; ``scarce_summary``/``by_method``:
    ``scarce_quivers``; ``fvu``: the SAEs' FVU per layer.
    """
    auc_with, auc_without = "mean test AUC, with SAE", "mean test AUC, without SAE"
    full = summary[auc_with] - summary[auc_without]
    val_means = q[q["candidates"] == "without SAE"].groupby("protocol")["val_auc"].mean()
    scarce_n = scarce_summary.index.min()
    small = scarce_summary.loc[scarce_n]
    chosen = summary["tasks where SAE probe chosen"]
    scarce_gain = max(
        (scarce_summary[(p, "with SAE")] - scarce_summary[(p, "without SAE")]).max()
        for p in PROTOCOLS
    )
    figures = {
        "n_best_layers": int(best_layer["dense"].nunique()),
        "fixed_without": summary.loc["fixed layer", auc_without],
        "fixed_with": summary.loc["fixed layer", auc_with],
        "per_task_without": summary.loc["per-task layer", auc_without],
        "per_task_with": summary.loc["per-task layer", auc_with],
        "gain_fixed": full["fixed layer"],
        "gain_per_task": full["per-task layer"],
        "sae_chosen_fixed": int(chosen["fixed layer"]),
        "sae_chosen_per_task": int(chosen["per-task layer"]),
        "layer_gain": summary.loc["per-task layer", auc_without]
        - summary.loc["fixed layer", auc_without],
        "layer_val_gain": val_means["per-task layer"] - val_means["fixed layer"],
        "scarce_n": int(scarce_n),
        "scarce_fixed_without": small[("fixed layer", "without SAE")],
        "scarce_fixed_with": small[("fixed layer", "with SAE")],
        "scarce_per_task_without": small[("per-task layer", "without SAE")],
        "scarce_per_task_with": small[("per-task layer", "with SAE")],
        "improved_fixed": int(summary.loc["fixed layer", "tasks improved"]),
        "worsened_fixed": int(summary.loc["fixed layer", "tasks worsened"]),
        "scarce_gain_max": scarce_gain,
        "scarce_dense_lead_min": (
            by_method["dense"] - by_method.drop(columns="dense").max(axis=1)
        ).min(),
        "sae_below_dense": int((best_auc["sae (best k)"] < best_auc["dense"]).sum()),
        "dense_layer_min": int(best_layer["dense"].min()),
        "dense_layer_max": int(best_layer["dense"].max()),
        "sae_fvu_max": fvu.max(),
        "sae_fvu_min": fvu.min(),
    }
    return {name: _plain(value) for name, value in figures.items()}
