"""One figure style and the plots chapters share. Each function draws on a given ``ax``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from saelib.claims import interval

STYLE = Path(__file__).with_name("saelib.mplstyle")

# One colour per SAE variant, the same in every chapter.
ARCH_COLORS = {
    "relu": "#4C72B0",
    "topk": "#DD8452",
    "batchtopk": "#C44E52",
    "matryoshka": "#DA8BC3",
    "jumprelu": "#55A868",
    "gated": "#8172B3",
    "mlp": "#937860",
    "mlp_topk": "#CCB974",
    "mp": "#64B5CD",
    "topk+ITO": "#000000",
}
ARCH_LABELS = {
    "relu": "ReLU + L1",
    "topk": "TopK",
    "batchtopk": "BatchTopK",
    "matryoshka": "Matryoshka",
    "jumprelu": "JumpReLU",
    "gated": "Gated",
    "mlp": "MLP encoder",
    "mlp_topk": "MLP encoder (TopK output)",
    "mp": "MP-SAE",
    "topk+ITO": "TopK decoder + ITO",
}
METRIC_LABELS = {
    "l0": "L0 (active latents per sample)",
    "fvu": "FVU",
    "mmcs": "MMCS (true atoms vs decoder)",
    "dead_fraction": "dead fraction",
    "delta_loss": "delta loss (nats)",
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


def mean_interval(values: pd.Series) -> pd.Series:
    """Mean and 95% t-interval half-widths over seeds (0 where one seed), for error bars."""
    mean, low, high, _ = interval(values)
    return pd.Series({"mean": mean, "below": mean - low, "above": high - mean}).fillna(0.0)


def pareto(
    ax: Axes,
    table: pd.DataFrame,
    x: str = "l0",
    y: str = "fvu",
    hue: str = "architecture",
    logx: bool = True,
    logy: bool = False,
    point: str | None = None,
) -> Axes:
    """One line per ``hue`` value through its points, sorted by ``x`` (a sparsity frontier).

    Without ``point`` every row is a point. With ``point`` (e.g. ``"knob"``) the rows sharing
    a ``(hue, point)`` value (one per seed) make one point at their mean, with 95% t
    intervals on both axes.
    """
    for key, group in table.groupby(hue, sort=False):
        if point is None:
            group = group.sort_values(x)
            ax.plot(group[x], group[y], marker="o", color=ARCH_COLORS.get(key), label=label(key))
            continue
        xs = group.groupby(point)[x].apply(mean_interval).unstack()
        ys = group.groupby(point)[y].apply(mean_interval).unstack()
        order = xs["mean"].sort_values().index
        xs, ys = xs.loc[order], ys.loc[order]
        ax.errorbar(
            xs["mean"], ys["mean"], xerr=[xs["below"], xs["above"]],
            yerr=[ys["below"], ys["above"]], marker="o", capsize=2,
            color=ARCH_COLORS.get(key), label=label(key),
        )  # fmt: skip
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    if logx:
        ax.set_xscale("log")
        _plain_log_labels(ax.xaxis)
    if logy:
        ax.set_yscale("log")
        _plain_log_labels(ax.yaxis)
    ax.legend()
    return ax


def _plain_log_labels(axis) -> None:
    """Label a log axis 1, 2, 5, 10, 20, ... (not 2 x 10^0, whose labels overlap)."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def bars_intervals(ax: Axes, table: pd.DataFrame, x: str, y: str) -> Axes:
    """Bars of the mean of ``y`` per ``x`` over the table's rows (one per seed), with 95% t
    intervals and every seed as a dot; the means written on top."""
    stats = table.groupby(x, sort=False)[y].apply(mean_interval).unstack()
    positions = range(len(stats))
    container = ax.bar(positions, stats["mean"], yerr=[stats["below"], stats["above"]],
                       capsize=3, color="#BBBBBB")  # fmt: skip
    ax.bar_label(container, fmt="%.2f", fontsize=8, padding=6)
    for i, key in enumerate(stats.index):
        seeds = table[table[x] == key][y]
        ax.plot([i] * len(seeds), seeds, "o", color="#333333", markersize=3)
    ax.set_xticks(list(positions), [label(k) for k in stats.index])
    ax.set_ylabel(label(y))
    ax.set_xlabel(label(x))
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
    "MP-SAE": ARCH_COLORS["mp"],
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
