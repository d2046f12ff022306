"""One figure style and the plots chapters share. Each function draws on a given ``ax``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
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
    "composite_fraction": "composite fraction (latents mixing two features)",
    "mmcs_composed": "MMCS (composed directions vs decoder)",
    "absorption": "absorption rate",
    "hedging": "hedging (child share in parent latent)",
    "objective": "training objective",
    "nn_cos_mean": "mean nearest-neighbour |cos|",
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


def heatmap(
    ax: Axes,
    grid: pd.DataFrame,
    title: str = "",
    vmin: float = 0.0,
    vmax: float = 1.0,
    fmt: str = ".2f",
    cmap: str = "viridis",
    cbar_label: str = "",
    text: pd.DataFrame | None = None,
) -> Axes:
    """Annotated heatmap of ``grid`` (rows = index, columns = columns), one value per cell.

    ``text`` (same shape) replaces the printed numbers, e.g. "0.50 ± 0.10" over seeds."""
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index])
    ax.set_xlabel(label(str(grid.columns.name or "")))
    ax.set_ylabel(label(str(grid.index.name or "")))
    ax.grid(False)
    middle = (vmin + vmax) / 2
    for (i, j), v in np.ndenumerate(values):
        colour = "black" if v > middle else "white"
        note = format(v, fmt) if text is None else str(text.iloc[i, j])
        ax.text(j, i, note, ha="center", va="center", color=colour, fontsize=8)
    ax.figure.colorbar(image, ax=ax, label=cbar_label)
    ax.set_title(title)
    return ax


def histograms(
    ax: Axes, samples: dict[str, np.ndarray], bins: np.ndarray, xlabel: str, colors=None
) -> Axes:
    """Step histograms (fraction of each sample per bin), one line per labelled sample."""
    colors = colors or {}
    for name, values in samples.items():
        weights = np.full(len(values), 1 / max(len(values), 1))
        ax.hist(values, bins=bins, weights=weights, histtype="step", lw=1.6, label=name,
                color=colors.get(name))  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of latents")
    ax.legend()
    return ax
