"""One figure style and the plots chapters share. Each function draws on a given ``ax``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes

STYLE = Path(__file__).with_name("saelib.mplstyle")

# One colour per SAE variant, the same in every chapter.
ARCH_COLORS = {
    "relu": "#4C72B0",
    "topk": "#DD8452",
    "batchtopk": "#C44E52",
    "jumprelu": "#55A868",
    "gated": "#8172B3",
    "mlp": "#937860",
}
ARCH_LABELS = {
    "relu": "ReLU + L1",
    "topk": "TopK",
    "batchtopk": "BatchTopK",
    "jumprelu": "JumpReLU",
    "gated": "Gated",
    "mlp": "MLP encoder",
}
METRIC_LABELS = {
    "l0": "L0 (active latents per sample)",
    "fvu": "FVU",
    "mmcs": "MMCS (true atoms vs decoder)",
    "dead_fraction": "dead fraction",
    "shrinkage": "shrinkage gamma",
}


def use_style() -> None:
    """Apply the project's matplotlib style."""
    plt.style.use(STYLE)


def label(name: str) -> str:
    return METRIC_LABELS.get(name, ARCH_LABELS.get(name, name))


def pareto(
    ax: Axes,
    table: pd.DataFrame,
    x: str = "l0",
    y: str = "fvu",
    hue: str = "architecture",
    logx: bool = True,
    logy: bool = False,
) -> Axes:
    """One line per ``hue`` value through its runs, sorted by ``x`` (a sparsity frontier)."""
    for key, group in table.groupby(hue, sort=False):
        group = group.sort_values(x)
        ax.plot(group[x], group[y], marker="o", color=ARCH_COLORS.get(key), label=label(key))
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.legend()
    return ax


def bars(ax: Axes, table: pd.DataFrame, x: str, y: str, hue: str | None = None) -> Axes:
    """Grouped bars of ``y`` by ``x`` (and ``hue``), with the values written on top."""
    import seaborn as sns

    sns.barplot(data=table, x=x, y=y, hue=hue, ax=ax, errorbar=None)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.2f", fontsize=8)
    ax.set_ylabel(label(y))
    ax.set_xlabel(label(x))
    return ax

# Inference methods of the amortisation-gap chapter, coloured like their closest SAE kin.
METHOD_COLORS = {
    "SAE": ARCH_COLORS["relu"],
    "MLP (1 hidden)": ARCH_COLORS["mlp"],
    "MLP (2 hidden)": "#5B4A3A",
    "SAE+ITO": ARCH_COLORS["jumprelu"],
    "sparse coding": ARCH_COLORS["gated"],
    "oracle": "#222222",
    "TopK encoder": ARCH_COLORS["topk"],
    "gradient pursuit": ARCH_COLORS["jumprelu"],
    "OMP": ARCH_COLORS["batchtopk"],
    "ISTA": "#8C8C8C",
    "FISTA": "#222222",
}
