"""Figures of chapter 04 (correlated features): means over seeds with 95% t intervals."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.axes import Axes

from saelib.plotting.base import label, mean_interval

__all__ = ["grouped_intervals", "lines_intervals"]


def lines_intervals(
    ax: Axes, table: pd.DataFrame, x: str, y: str, hue: str, *, logx: bool = False
) -> Axes:
    """One line per ``hue`` value: the mean of ``y`` over the rows (seeds) at each ``x``,
    with 95% t intervals as error bars. Groups in order of appearance."""
    for key, group in table.groupby(hue, sort=False):
        stats = group.groupby(x)[y].apply(mean_interval).unstack().sort_index()
        ax.errorbar(stats.index, stats["mean"], yerr=[stats["below"], stats["above"]],
                    marker="o", capsize=2, label=str(key))  # fmt: skip
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    return ax


def grouped_intervals(
    ax: Axes, table: pd.DataFrame, x: str, y: str, hue: str, *, order: Sequence | None = None
) -> Axes:
    """Per ``x`` value (in ``order``, default of appearance), one point per ``hue`` value,
    side by side: the mean of ``y`` over the rows (seeds) with a 95% t interval."""
    order = list(order) if order is not None else list(dict.fromkeys(table[x]))
    hues = list(dict.fromkeys(table[hue]))
    width = 0.8 / max(len(hues), 1)
    for j, key in enumerate(hues):
        rows = table[table[hue] == key]
        stats = rows.groupby(x)[y].apply(mean_interval).unstack().reindex(order)
        at = [i - 0.4 + width * (j + 0.5) for i in range(len(order))]
        ax.errorbar(at, stats["mean"], yerr=[stats["below"], stats["above"]], fmt="o",
                    capsize=2, label=str(key))  # fmt: skip
    ax.set_xticks(range(len(order)), [str(o) for o in order])
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    return ax
