"""The probing chapter's claims, measured: one effect per task (see its schema's claims).

    effects = claim_effects(table, fixed, scarce, kept, null)   # claim id -> effects per task
    curves = scarce_curves(scarce, kept)                         # [task, n_train, arm]

``table``: rows of :func:`saelib.probing.layers.probe_layers` with
:func:`~saelib.probing.protocols.with_family`; ``scarce``: rows of ``scarce_probes`` at the
fixed layer; ``kept``: the tasks that count (neither flagged nor dropped); ``null``: the
:class:`~saelib.probing.selection.LayerNull` of ``best_layer_differs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from saelib.claims import Interval
from saelib.probing.protocols import best_rows, is_sae, protocol_auc, quivers
from saelib.probing.selection import LayerNull
from saelib.validation import require


def family_auc(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Test AUC of each family's validation-best row per group of ``by`` (which must hold
    ``task`` and ``family``): rows tasks, columns families."""
    best = best_rows(table, list(by))
    return best.pivot_table(index="task", columns="family", values="test_auc")


def scarce_curves(scarce: pd.DataFrame, kept: Sequence[str]) -> pd.DataFrame:
    """Per task, training size and draw, the test AUC of ``dense``, of the validation-best
    SAE probe (``sae``) and of the quiver with the SAE probes among its candidates
    (``quiver``); rows of ``scarce_probes`` at one layer and pooling."""
    rows = scarce[scarce["task"].isin(list(kept))]
    require(rows["layer"].nunique() == 1, "scarce (layers)", sorted(rows["layer"].unique()),
            "one layer (the fixed one)")  # fmt: skip
    out = []
    for (task, n, draw), g in rows.groupby(["task", "n_train", "draw"], sort=False):
        dense = g[g["method"] == "dense"].iloc[0]
        sae = g[is_sae(g["method"])]
        best_sae = sae.loc[sae["val_auc"].idxmax()]
        both = pd.concat([g[g["method"] == "dense"], sae])
        quiver = both.loc[both["val_auc"].idxmax()]  # dense first: it wins ties
        out.append({"task": task, "n_train": n, "draw": draw, "dense": dense["test_auc"],
                    "sae": best_sae["test_auc"], "quiver": quiver["test_auc"]})  # fmt: skip
    return pd.DataFrame(out)


def claim_effects(
    table: pd.DataFrame,
    fixed: int,
    scarce: pd.DataFrame,
    kept: Sequence[str],
    null: LayerNull,
) -> dict[str, object]:
    """Every claim of ``06_probing``'s schema: per-task effects (a list over ``kept``, in
    order) or, for ``best_layer_differs``, the null test's :class:`Interval`."""
    kept = list(kept)
    require(len(kept) >= 2, "kept (tasks)", kept, "at least two tasks")
    rows = table[table["task"].isin(kept)]
    at_fixed = family_auc(rows[rows["layer"] == fixed], ["task", "family"]).loc[kept]
    own = family_auc(rows, ["task", "family"]).loc[kept]
    wide = protocol_auc(quivers(rows, fixed), kept)
    curves = scarce_curves(scarce, kept)
    small = curves[curves["n_train"] == curves["n_train"].min()]
    small = small.groupby("task")[["dense", "sae", "quiver"]].mean().loc[kept]
    low, high = null.interval()
    effects = {
        "sae_beats_dense_fixed": at_fixed["sae (best k)"] - at_fixed["dense"],
        "sae_beats_dense_per_task": own["sae (best k)"] - own["dense"],
        "quiver_sae_helps_fixed": wide[("fixed layer", "with SAE")]
        - wide[("fixed layer", "without SAE")],
        "quiver_sae_helps_per_task": wide[("per-task layer", "with SAE")]
        - wide[("per-task layer", "without SAE")],
        "per_task_layer_pays": wide[("per-task layer", "without SAE")]
        - wide[("fixed layer", "without SAE")],
        "scarce_sae_helps": small["quiver"] - small["dense"],
        "scarce_sae_beats_dense": small["sae"] - small["dense"],
    }
    out: dict[str, object] = {k: [float(v) for v in e.to_numpy()] for k, e in effects.items()}
    out["best_layer_differs"] = Interval(null.excess, low, high, len(null.null))
    return out
