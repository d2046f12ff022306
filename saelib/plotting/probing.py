"""Figures of the probing chapter: test AUC by layer, peaks, the two protocols' quivers.

Every function draws on the ``ax`` (or the grid of ``axes``) it is given and returns it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

# One colour per probe family; the quiver with SAE probes takes the SAE colour.
FAMILY_COLORS = {"dense": "C0", "pca": "C2", "sae (best k)": "C3"}
QUIVER_COLORS = {"without SAE": "C0", "with SAE": "C3"}


def auc_by_layer(ax: Axes, curves: pd.DataFrame, task: str) -> Axes:
    """Test AUC against layer of ``task``: one line per family and pooling (solid: mean).

    ``curves``: one row per task, layer, pooling and family (``probe_layers`` rows with a
    ``family``, e.g. the validation-best per family from ``protocols.best_rows``).
    """
    for (fam, pooling), g in curves[curves["task"] == task].groupby(["family", "pooling"]):
        g = g.sort_values("layer")
        ls = "-" if pooling == "mean" else "--"
        ax.plot(g["layer"], g["test_auc"], color=FAMILY_COLORS[fam], ls=ls, marker="o", ms=3,
                label=f"{fam}, {pooling}")  # fmt: skip
    ax.set_title(task, fontsize=9)
    return ax


def auc_by_layer_grid(axes: np.ndarray, curves: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """:func:`auc_by_layer` for each task of ``names`` on a 2-D grid of ``axes`` (the spare
    ones switched off), with the axis labels on the outer edge and one legend."""
    for ax, name in zip(axes.flat, names, strict=False):
        auc_by_layer(ax, curves, name)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("test AUC")
    for ax in axes[-1]:
        ax.set_xlabel("layer")
    axes.flat[0].legend(fontsize=6)
    return axes


def layer_heatmap(ax: Axes, grid: pd.DataFrame, title: str) -> Axes:
    """``grid`` [task, layer] as an image with a colour bar (no numbers printed)."""
    image = ax.imshow(grid.to_numpy(), cmap="viridis", aspect="auto")
    ax.set(xticks=range(grid.shape[1]), xticklabels=grid.columns, yticks=range(grid.shape[0]),
           yticklabels=grid.index, xlabel="layer", title=title)  # fmt: skip
    ax.figure.colorbar(image, ax=ax)
    return ax


def quiver_bars(ax: Axes, wide: pd.DataFrame, protocol: str) -> Axes:
    """The quiver's test AUC per task under ``protocol``, without and with SAE probes.

    ``wide``: ``protocols.protocol_auc`` (the y range is shared by both protocols)."""
    x = np.arange(len(wide))
    for shift, cand in ((-0.2, "without SAE"), (0.2, "with SAE")):
        ax.bar(x + shift, wide[(protocol, cand)], 0.4, label=f"quiver {cand}",
               color=QUIVER_COLORS[cand])  # fmt: skip
    low = min(0.5, np.floor(10 * wide.min().min()) / 10)
    ax.set(xticks=x, title=protocol, ylim=(low, 1.0))
    ax.set_xticklabels(wide.index, rotation=45, ha="right", fontsize=7)
    return ax


def scarce_lines(ax: Axes, summary: pd.DataFrame, protocol: str) -> Axes:
    """The quivers' mean test AUC against the number of training examples (log axis).

    ``summary``: the first result of ``protocols.scarce_quivers``."""
    for cand in ("without SAE", "with SAE"):
        ax.plot(summary.index, summary[(protocol, cand)], "o-", color=QUIVER_COLORS[cand],
                label=f"quiver {cand}")  # fmt: skip
    ax.set(xscale="log", xlabel="training examples", title=protocol)
    ax.set_xticks(summary.index, [str(n) for n in summary.index])
    ax.minorticks_off()
    return ax
