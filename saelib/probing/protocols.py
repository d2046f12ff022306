"""Choosing among the probes: the quiver under the fixed-layer and per-task-layer protocols.

    q = quivers(table, fixed)                 # per task: the validation-best row, 2 x 2 ways
    wide = protocol_auc(q, names)             # test AUC [task, (protocol, candidates)]
    summary = protocol_summary(q, names)      # per protocol: means, SAE chosen, improved
    scarce_summary, by_method = scarce_quivers(scarce, fixed)

The *fixed-layer* protocol (Kantamneni et al. 2025) probes every task at one layer; the
*per-task* protocol lets each task pick its layer (and pooling, and method) on validation
data, as the objection in ``shared/seeds/001`` asks. Both choose on validation AUC and are
judged on test AUC, with and without the k-sparse SAE probes among the candidates. Tables
are those of :func:`saelib.probing.layers.probe_layers` and ``scarce_probes``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from saelib.validation import require

PROTOCOLS = ("fixed layer", "per-task layer")
CANDIDATES = ("with SAE", "without SAE")


def is_sae(method: pd.Series) -> pd.Series:
    """Which of the ``method`` names are k-sparse SAE probes (``sae_k*``)."""
    return method.str.startswith("sae_")


def with_family(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``family`` column: ``dense``, ``pca`` or ``sae (best k)``."""
    family = table["method"].where(~is_sae(table["method"]), "sae (best k)")
    return table.assign(family=family.where(~family.str.startswith("pca"), "pca"))


def best_rows(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by``, the row with the best validation AUC (the first on ties)."""
    ordered = table.sort_values("val_auc", ascending=False, kind="stable")
    return ordered.groupby(list(by), sort=False).head(1)


def peaks(table: pd.DataFrame, names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per task (rows in the order of ``names``) and method family: the validation-best
    ``layer`` (any pooling) and the test AUC there. ``table`` needs :func:`with_family`."""
    best = best_rows(table, ["task", "family"])
    layer = best.pivot(index="task", columns="family", values="layer").loc[list(names)]
    auc = best.pivot(index="task", columns="family", values="test_auc").loc[list(names)]
    return layer, auc


def dense_grid(table: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The dense probe's test AUC [task, layer], the better of the two poolings."""
    dense = table[table["family"] == "dense"]
    return dense.groupby(["task", "layer"])["test_auc"].max().unstack().loc[list(names)]


def choose_fixed_layer(table: pd.DataFrame) -> int:
    """The one layer for all tasks: best mean (over tasks) validation AUC of the dense
    methods' quiver, i.e. chosen without test data and without the SAE probes."""
    dense = table[~is_sae(table["method"])]
    per_task = dense.groupby(["layer", "task"])["val_auc"].max()
    return int(per_task.groupby("layer").mean().idxmax())


def _best(rows: pd.DataFrame) -> pd.Series:
    """The validation-best row; ties go to the first (as ``saelib.probing.probes.quiver``)."""
    return rows.loc[rows["val_auc"].idxmax()]


def quivers(table: pd.DataFrame, fixed_layer: int | None = None) -> pd.DataFrame:
    """Per task, the quiver's choice under both protocols, with and without SAE probes.

    Rows: task, protocol (``fixed layer`` / ``per-task layer``), candidates (``with SAE`` /
    ``without SAE``), and the chosen row's layer, pooling, method, val_auc, test_auc.
    ``fixed_layer`` defaults to :func:`choose_fixed_layer`.
    """
    layers = sorted(int(layer) for layer in table["layer"].unique())
    if fixed_layer is None:
        fixed_layer = choose_fixed_layer(table)
    require(fixed_layer in layers, "fixed_layer", fixed_layer, f"one of the probed layers {layers}")
    out = []
    cols = ["layer", "pooling", "method", "val_auc", "test_auc"]
    for task, rows in table.groupby("task", sort=False):
        at_fixed = rows[rows["layer"] == fixed_layer]
        for protocol, cand in zip(PROTOCOLS, (at_fixed, rows), strict=True):
            dense = cand[~is_sae(cand["method"])]
            for label, keep in zip(CANDIDATES, (cand, dense), strict=True):
                where = {"task": task, "protocol": protocol, "candidates": label}
                out.append(where | _best(keep)[cols].to_dict())
    return pd.DataFrame(out)


def protocol_auc(q: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The quivers' test AUC: rows tasks (in the order of ``names``), columns
    ``(protocol, candidates)``."""
    wide = q.pivot_table(index="task", columns=["protocol", "candidates"], values="test_auc")
    return wide.loc[list(names)]


def protocol_summary(q: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per protocol: mean test AUC without and with SAE probes, the tasks where the quiver
    chose an SAE probe, and the tasks whose test AUC adding them raised or lowered."""
    wide = protocol_auc(q, names)
    gain = pd.DataFrame({p: wide[(p, "with SAE")] - wide[(p, "without SAE")] for p in PROTOCOLS})
    picked_sae = q[q["candidates"] == "with SAE"].assign(sae=lambda d: is_sae(d["method"]))
    return pd.DataFrame(
        {
            "mean test AUC, without SAE": wide.xs("without SAE", axis=1, level=1).mean(),
            "mean test AUC, with SAE": wide.xs("with SAE", axis=1, level=1).mean(),
            "tasks where SAE probe chosen": picked_sae.groupby("protocol")["sae"].sum(),
            "tasks improved": (gain > 0).sum(),
            "tasks worsened": (gain < 0).sum(),
        }
    )


def scarce_quivers(scarce: pd.DataFrame, fixed_layer: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The data-scarce regime (rows of ``scarce_probes``) under both protocols.

    Returns ``(summary, by_method)``: the quivers' mean test AUC over tasks and draws
    [n_train, (protocol, candidates)], and at ``fixed_layer`` each method's mean test AUC
    [n_train, method].
    """
    choices = [
        quivers(g, fixed_layer).assign(n_train=n, draw=d)
        for (n, d), g in scarce.groupby(["n_train", "draw"])
    ]
    q = pd.concat(choices, ignore_index=True)
    summary = (
        q.groupby(["n_train", "protocol", "candidates"])["test_auc"]
        .mean()
        .unstack(["protocol", "candidates"])
    )
    at = scarce[scarce["layer"] == fixed_layer]
    methods = pd.concat([at[at["method"] == "dense"], at[is_sae(at["method"])]])
    by_method = methods.groupby(["n_train", "method"])["test_auc"].mean().unstack()
    return summary, by_method
