"""Figures of the language-model chapters; each draws on the axes it is given and returns them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from saelib.lm.scaling import PowerLaw
from saelib.plotting.base import ARCH_COLORS, pareto

DELTA_LOSS = "delta loss (nats)"


def frontiers(
    axes: tuple[Axes, Axes],
    table: pd.DataFrame,
    extra: pd.DataFrame | None = None,
    extra_label: str = "",
) -> tuple[Axes, Axes]:
    """FVU (left) and delta loss (right) against L0, one frontier per architecture.

    ``extra`` (columns ``l0``, ``fvu``, ``delta_loss``, e.g. SAE+ITO) is drawn as black
    stars on both panels. The legend is on the left panel only.
    """
    left, right = axes
    pareto(left, table, "l0", "fvu", logy=True)
    pareto(right, table, "l0", "delta_loss", logy=True)
    if extra is not None:
        for ax, y in zip(axes, ("fvu", "delta_loss"), strict=True):
            ax.plot(extra["l0"], extra[y], "k*", ms=12, label=extra_label)
        left.legend(fontsize=7)
    right.get_legend().remove()
    right.set_ylabel(DELTA_LOSS)
    return axes


def by_hook(axes: tuple[Axes, Axes], table: pd.DataFrame) -> tuple[Axes, Axes]:
    """FVU (left) and delta loss (right) against L0, one line per ``hook`` of ``table``."""
    left, right = axes
    for hook, group in table.groupby("hook", sort=False):
        group = group.sort_values("l0")
        left.plot(group["l0"], group["fvu"], marker="o", label=hook)
        right.plot(group["l0"], group["delta_loss"], marker="o", label=hook)
    left.set(xscale="log", xlabel="L0", ylabel="FVU")
    right.set(xscale="log", xlabel="L0", ylabel=DELTA_LOSS)
    left.legend()
    return axes


def power_law(
    axes: tuple[Axes, Axes],
    law: PowerLaw,
    architecture: str = "topk",
    label: str = "TopK",
    quantity: str = "FVU",
) -> tuple[Axes, Axes]:
    """The fitted points and ``a n^-b`` on log-log axes (left), the log residuals (right).

    ``architecture`` picks the colour, ``label`` names the points, ``quantity`` is ``y``.
    """
    left, right = axes
    color = ARCH_COLORS[architecture]
    left.loglog(law.n, law.y, "o", color=color, label=label)
    grid = np.geomspace(law.n.min(), law.n.max(), 50)
    left.loglog(grid, law(grid), "k--", label=f"{quantity} = {law.a:.2f} n^-{law.b:.3f}")
    left.set(xlabel="latents n", ylabel=quantity)
    left.legend()
    right.axhline(0, color="grey", ls=":")
    right.semilogx(law.n, law.residuals, "o-", color=color)
    right.set(xlabel="latents n", ylabel="log residual")
    return axes
