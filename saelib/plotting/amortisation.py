"""Figures of the amortisation-gap chapter (02): each draws on the axes it is given, returns them.

The tables are those of ``saelib.coding.gap`` and ``saelib.coding.gap_views``; methods are
coloured by ``METHOD_COLORS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from saelib.plotting.base import METHOD_COLORS

__all__ = ["flop_curves", "ito_against_encoder", "iterations", "setting_bars", "sweep_lines"]


def setting_bars(axes: Sequence[Axes], best: pd.DataFrame) -> Sequence[Axes]:
    """One panel per setting of ``best``: mean test code MCC per method (bars, value on top)
    and each seed's MCC (dots)."""
    for ax, setting in zip(axes, best["setting"].unique(), strict=True):
        part = best[best["setting"] == setting]
        methods = list(part["method"].unique())
        means = part.groupby("method", sort=False)["mcc"].mean()[methods]
        ax.bar(range(len(methods)), means, color=[METHOD_COLORS[m] for m in methods], alpha=0.8)
        for i, m in enumerate(methods):
            seeds = part[part["method"] == m]["mcc"]
            ax.scatter(np.full(len(seeds), i), seeds, color="k", s=10, zorder=3)
            ax.text(i, means[m] + 0.02, f"{means[m]:.2f}", ha="center", fontsize=8)
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right")
        ax.set_title(setting)
    axes[0].set_ylabel("code MCC (test)")
    axes[0].set_ylim(0, 1.08)
    return axes


def flop_curves(axes: Sequence[Axes], curves: pd.DataFrame, oracle: pd.DataFrame) -> Sequence[Axes]:
    """Code MCC and dictionary MMCS against total FLOPs, one line per method of ``curves``;
    the ``oracle`` rows' mean as a star on the MCC panel."""
    for ax, metric, name in zip(
        axes, ["mcc", "mmcs"], ["code MCC", "dictionary MMCS"], strict=True
    ):
        for method, part in curves.groupby("method", sort=False):
            ax.plot(part["flops"], part[metric], marker="o", color=METHOD_COLORS[method],
                    label=method)  # fmt: skip
        if metric == "mcc":
            ax.scatter(oracle["flops"].mean(), oracle["mcc"].mean(), marker="*", s=120,
                       color=METHOD_COLORS["oracle"], label="oracle", zorder=3)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("total FLOPs (training + inference on the test set)")
        ax.set_ylabel(f"{name} (test)")
    axes[0].legend(fontsize=8)
    return axes


def sweep_lines(
    axes: Sequence[Axes], sweep: pd.DataFrame, views: Sequence[tuple[str, dict]]
) -> Sequence[Axes]:
    """One panel per ``(axis, fixed)`` of ``views``: the oracle's, the SAE's and the MLP's MCC
    along ``axis`` (a column of ``sweep``) on the rows where the ``fixed`` columns hold."""
    for ax, (axis, fixed) in zip(axes, views, strict=True):
        part = sweep[(sweep[list(fixed)] == pd.Series(fixed)).all(axis=1)].sort_values(axis)
        for method in ("oracle", "SAE", "MLP (1 hidden)"):
            ax.plot(part[axis], part[method], marker="o", color=METHOD_COLORS[method], label=method)
        ax.set_xlabel(axis)
        ax.set_title(", ".join(f"{key}={v:g}" for key, v in fixed.items()))
    axes[0].set_ylabel("code MCC (test), setting (b)")
    axes[0].legend(fontsize=8)
    return axes


def iterations(ax: Axes, curve: pd.DataFrame, encoders: pd.DataFrame) -> Axes:
    """ISTA/FISTA MCC against inference FLOPs per sample (lines), the trained encoders as
    points (squares: setting a, triangles: b)."""
    for method, part in curve.groupby("method", sort=False):
        ax.plot(part["flops"], part["mcc"], marker="o", color=METHOD_COLORS[method],
                label=f"{method} on the true D")  # fmt: skip
    for _, row in encoders.iterrows():
        marker = "s" if row["setting"].startswith("a") else "^"
        name = f"{row['method']}, {row['setting']}"
        ax.scatter(row["inference_flops"], row["mcc"], marker=marker, s=60,
                   color=METHOD_COLORS[row["method"]], label=name)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("inference FLOPs per sample")
    ax.set_ylabel("code MCC (test)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def ito_against_encoder(ax: Axes, table: pd.DataFrame, trained_k: int) -> Axes:
    """Test FVU against the L0 asked for, one line per method, the trained k marked."""
    for method, part in table.groupby("method", sort=False):
        ax.plot(part["l0"], part["fvu"], marker="o", color=METHOD_COLORS[method], label=method)
    ax.axvline(trained_k, color="grey", ls=":", label=f"trained k = {trained_k}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("L0 at inference")
    ax.set_ylabel("FVU (test)")
    ax.legend()
    ax.set_title("One TopK decoder, three ways to pick its codes")
    return ax
