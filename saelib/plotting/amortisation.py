"""Figures of the amortisation-gap chapter (02): each draws on the axes it is given, returns them.

The tables are those of ``saelib.coding.gap_run.collect`` (one row per seed and point); every
figure shows the mean over seeds and its 95% Student-t interval (``saelib.claims.interval``)
as error bars or a band. Methods are coloured by ``color``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from saelib.claims import interval
from saelib.plotting.base import METHOD_COLORS

__all__ = [
    "band",
    "color",
    "flop_curves",
    "ito_against_encoder",
    "iterations",
    "loss_curves",
    "setting_bars",
    "sweep_lines",
]

_EXTRA = {"LISTA (2 steps)": "#7A9E3B", "LISTA (4 steps)": "#3B6E1E"}
_CYCLE = ["#1B9E77", "#D95F02", "#7570B3", "#E7298A", "#66A61E", "#E6AB02"]


def color(method: str) -> str:
    """The colour of ``method``: ``METHOD_COLORS``, LISTA's greens, else a fixed cycle."""
    known = METHOD_COLORS | _EXTRA
    if method in known:
        return known[method]
    return _CYCLE[sum(map(ord, method)) % len(_CYCLE)]


def _summary(frame: pd.DataFrame, by: str, x: str, y: str) -> pd.DataFrame:
    """Per value of ``by``: the mean of ``x`` and the mean and 95% t interval of ``y``."""
    rows = []
    for key, part in frame.groupby(by, sort=True):
        mean, low, high, n = interval(part[y])
        rows.append({by: key, x: part[x].mean(), "mean": mean, "low": low, "high": high, "n": n})
    return pd.DataFrame(rows).sort_values(x)


def band(ax: Axes, frame: pd.DataFrame, by: str, x: str, y: str, label: str, **style) -> Axes:
    """A line through the mean of ``y`` (over seeds) at each ``by``, against the mean ``x``,
    with its 95% t interval as a band."""
    s = _summary(frame, by, x, y)
    c = style.pop("color", color(label))
    ax.plot(s[x], s["mean"], marker="o", ms=3, color=c, label=label, **style)
    ax.fill_between(s[x], s["low"], s["high"], color=c, alpha=0.2, lw=0)
    return ax


def setting_bars(axes: Sequence[Axes], best: pd.DataFrame) -> Sequence[Axes]:
    """One panel per setting of ``best`` (a, b, c): mean test code MCC per method (bars) with
    its 95% t interval over seeds (error bars), each seed's MCC (dots)."""
    for ax, setting in zip(axes, sorted(best["setting"].unique()), strict=True):
        part = best[best["setting"] == setting]
        methods = list(part["method"].unique())
        stats = [interval(part[part["method"] == m]["mcc"]) for m in methods]
        means = np.array([s[0] for s in stats])
        errors = np.array([[s[0] - s[1], s[2] - s[0]] for s in stats]).T
        ax.bar(range(len(methods)), means, color=[color(m) for m in methods], alpha=0.8,
               yerr=np.nan_to_num(errors), capsize=3)  # fmt: skip
        for i, m in enumerate(methods):
            seeds = part[part["method"] == m]["mcc"]
            ax.scatter(np.full(len(seeds), i), seeds, color="k", s=8, zorder=3)
        ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=8)
        ax.set_title(setting)
    axes[0].set_ylabel("code MCC (test)")
    axes[0].set_ylim(0, 1.05)
    return axes


def flop_curves(axes: Sequence[Axes], curves: pd.DataFrame, oracle: pd.DataFrame) -> Sequence[Axes]:
    """Code MCC and dictionary MMCS against total FLOPs, one band per method of ``curves``
    (points at each ``step``: training steps, or sparse-coding rounds); the oracle's mean MCC
    as a star."""
    for ax, metric, name in zip(
        axes, ["mcc", "mmcs"], ["code MCC", "dictionary MMCS"], strict=True
    ):
        for method, part in curves.groupby("method", sort=False):
            band(ax, part, "step", "flops", metric, method)
        if metric == "mcc":
            ax.scatter(oracle["flops"].mean(), oracle["mcc"].mean(), marker="*", s=120,
                       color=color("oracle"), label="oracle", zorder=3)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("total FLOPs (training + inference on the test set)")
        ax.set_ylabel(f"{name} (test)")
    axes[0].legend(fontsize=7)
    return axes


def loss_curves(ax: Axes, curves: pd.DataFrame) -> Axes:
    """Each SAE family's validation loss along training (setting c, chosen lambda), divided by
    its value at the end of training: a plateau shows as a flat line at 1."""
    part = curves.dropna(subset=["val_loss"])
    last = part.groupby(["seed", "method"])["val_loss"].transform(
        lambda v: v.loc[part.loc[v.index, "step"].idxmax()]
    )
    part = part.assign(relative=part["val_loss"] / last)
    for method, one in part.groupby("method", sort=False):
        band(ax, one, "step", "step", "relative", method)
    ax.axhline(1, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss / loss at the end")
    ax.set_title("Setting (c): training loss along the run")
    ax.legend(fontsize=7)
    return ax


def sweep_lines(ax: Axes, sweep: pd.DataFrame) -> Axes:
    """Setting (b) against N: the oracle's, the SAE's and the 1-hidden MLP's test MCC."""
    for method in ("oracle", "SAE", "MLP (1 hidden)"):
        band(ax, sweep, "N", "N", method, method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (latents)")
    ax.set_ylabel("code MCC (test), setting (b)")
    ax.legend(fontsize=8)
    return ax


def iterations(ax: Axes, curve: pd.DataFrame, encoders: pd.DataFrame) -> Axes:
    """ISTA/FISTA MCC against inference FLOPs per sample (bands), the trained encoders as
    points with 95% t error bars (squares: setting a, triangles: b)."""
    for method, part in curve.groupby("method", sort=False):
        band(ax, part, "iterations", "flops", "mcc", f"{method} on the true D",
             color=color(method))  # fmt: skip
    for (setting, method), part in encoders.groupby(["setting", "method"], sort=False):
        mean, low, high, _ = interval(part["mcc"])
        marker = "s" if setting.startswith("a") else "^"
        ax.errorbar(part["inference_flops"].mean(), mean,
                    yerr=[[np.nan_to_num(mean - low)], [np.nan_to_num(high - mean)]],
                    marker=marker, ms=6, color=color(method), capsize=3,
                    label=f"{method}, {setting}", ls="none")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("inference FLOPs per sample")
    ax.set_ylabel("code MCC (test)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def ito_against_encoder(ax: Axes, table: pd.DataFrame, trained_k: int) -> Axes:
    """Test FVU against the L0 asked for, one band per method, the trained k marked."""
    for method, part in table.groupby("method", sort=False):
        band(ax, part, "l0", "l0", "fvu", method)
    ax.axvline(trained_k, color="grey", ls=":", label=f"trained k = {trained_k}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("L0 at inference")
    ax.set_ylabel("FVU (test)")
    ax.legend()
    ax.set_title("One TopK decoder, three ways to pick its codes")
    return ax
