"""Figures of the ground-truth chapters (toy composition, correlated features).

Every function draws on the ``ax`` it is given and returns it; tables are the ones
``saelib.toys.ground_truth`` builds (one row per trained SAE).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes

from saelib.plotting.base import ARCH_COLORS, heatmap, label, mean_interval

# A feature's part in a ``SyntheticData`` layout (``saelib.toys.synthetic.ROLES``).
ROLE_COLORS = {
    "parent": "#C44E52",
    "child": "#DD8452",
    "co-occurring pair": "#4C72B0",
    "independent": "grey",
}


def composed_toy(
    ax: Axes,
    x: torch.Tensor,
    dictionary: torch.Tensor,
    composed: torch.Tensor,
    names: Sequence[str] = ("x1", "x2", "y1", "y2"),
) -> Axes:
    """The 2-d toy: samples ``x [n, 2]``, true atoms as arrows, composed directions dashed."""
    ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.4, color="grey")
    for name, v in zip(names, dictionary, strict=True):
        ax.annotate("", xy=v.tolist(), xytext=(0, 0), arrowprops=dict(arrowstyle="->", lw=1.8))
        ax.text(*(1.12 * v).tolist(), name, ha="center", va="center")
    for v in composed:
        ax.plot([0, v[0]], [0, v[1]], ls="--", color="#C44E52")
    ax.set_aspect("equal")
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.set_title("Samples, true features (arrows), composed directions (dashed)")
    return ax


def mean_interval_grid(
    table: pd.DataFrame, value: str, index: str, columns: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``value``'s mean over the rows (seeds) of each (``index``, ``columns``) cell, and
    "mean\n±h" text, ``h`` the half-width of the 95% t interval (0 with one row)."""
    stats = table.groupby([index, columns])[value].apply(mean_interval).unstack()
    means = stats["mean"].unstack(columns)
    half = np.maximum(stats["below"], stats["above"])
    text = stats["mean"].map("{:.2f}".format) + "\n±" + half.map("{:.2f}".format)
    return means, text.unstack(columns)


def seed_heatmap(
    ax: Axes,
    table: pd.DataFrame,
    value: str,
    index: str,
    columns: str,
    *,
    symmetric: bool = False,
    **kwargs,
) -> Axes:
    """Heatmap of ``value``'s mean over seeds per (``index``, ``columns``), annotated with the
    mean ± the 95% t interval's half-width (:func:`mean_interval_grid`).

    ``symmetric``: a colour scale from ``-m`` to ``m``, ``m`` the largest |mean| (empty cells
    skipped). Other keyword arguments go to ``saelib.plotting.heatmap`` (title, cmap,
    cbar_label, ...).
    """
    means, text = mean_interval_grid(table, value, index, columns)
    if symmetric:
        span = float(np.nanmax(np.abs(means.to_numpy())))
        kwargs |= {"vmin": -span, "vmax": span}
    return heatmap(ax, means, text=text, **kwargs)


def seed_strips(
    ax: Axes,
    table: pd.DataFrame,
    value: str,
    by: str,
    *,
    colors: Mapping[str, str] | None = None,
    horizontal: bool = True,
    half_width: float = 0.3,
    scale: float = 1.0,
) -> Axes:
    """One strip per group of ``by`` (in order of appearance): a dot per run, a bar at the mean.

    ``horizontal``: values along x, groups down the y axis (the caller labels the group axis);
    else groups along x with their names as ticks. ``scale`` multiplies the values.
    ``colors`` maps group names to colours (default: the ReLU colour).
    """
    colors = colors or {}
    order = list(dict.fromkeys(table[by]))
    for i, name in enumerate(order):
        vals = table.loc[table[by] == name, value] * scale
        colour = colors.get(name, ARCH_COLORS["relu"])
        at, bar = [i] * len(vals), [i - half_width, i + half_width]
        if horizontal:
            ax.scatter(vals, at, color=colour, s=18)
            ax.plot([vals.mean()] * 2, bar, color="black")
        else:
            ax.scatter(at, vals, color=colour, s=18)
            ax.plot(bar, [vals.mean()] * 2, color="black")
    if not horizontal:
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
    return ax


def frequencies_by_role(ax: Axes, probabilities: torch.Tensor, roles: np.ndarray) -> Axes:
    """Each feature's firing probability against its index, coloured by its role."""
    for name, colour in ROLE_COLORS.items():
        idx = np.flatnonzero(roles == name)
        ax.scatter(idx, probabilities[idx], s=8, color=colour, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("feature index")
    ax.set_ylabel("firing probability")
    ax.legend()
    ax.set_title("Feature frequencies and roles")
    return ax


def recovery_vs_frequency(
    ax: Axes,
    probabilities: torch.Tensor,
    best_cos: Mapping[str, np.ndarray],
    colors: Mapping[str, str],
) -> Axes:
    """Per true feature: the best |cos| with a decoder atom against its firing probability."""
    for name, best in best_cos.items():
        ax.scatter(probabilities, best, s=8, color=colors[name], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("firing probability of the true feature")
    ax.set_ylabel("best |cos| with a decoder atom")
    ax.legend()
    return ax


def metric_lines(
    ax: Axes,
    table: pd.DataFrame,
    x: str,
    y: str,
    by: str,
    *,
    colors: Mapping[str, str] | None = None,
    styles: Mapping[str, str] | None = None,
    default_style: str = "-",
) -> Axes:
    """One line with markers of ``y`` against ``x`` per group of ``by`` (in order of appearance).

    ``colors`` and ``styles`` (line styles) by group name; groups missing from them get the
    cycle's next colour and ``default_style``. Rows are drawn in the table's order.
    """
    colors, styles = colors or {}, styles or {}
    for name, group in table.groupby(by, sort=False):
        ax.plot(group[x], group[y], marker="o", label=name, color=colors.get(name),
                ls=styles.get(name, default_style))  # fmt: skip
    return ax


def training_curves(ax: Axes, table: pd.DataFrame, term: str = "mse") -> Axes:
    """The training log's ``term`` against step for every run of ``table`` (a ``history``
    column of Trainer records), one colour per architecture, log scale."""
    for arch, group in table.groupby("architecture", sort=False):
        for i, (_, run) in enumerate(group.iterrows()):
            log = pd.DataFrame(run["history"])
            ax.plot(log["step"], log[term], color=ARCH_COLORS.get(arch), lw=1,
                    label=label(arch) if i == 0 else None)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training {term} (batch)")
    ax.legend(fontsize=7)
    return ax
