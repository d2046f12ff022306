"""One figure style, and the figures of the book: every function draws on a given ``ax``.

``base``: the style, colours and labels, and the plots several chapters share (frontiers,
bars, heatmaps, histograms). One module per chapter family holds that family's figures.
"""

from saelib.plotting.base import (
    ARCH_COLORS,
    ARCH_LABELS,
    METHOD_COLORS,
    METRIC_LABELS,
    bars,
    bars_intervals,
    heatmap,
    histograms,
    label,
    pareto,
    use_style,
)

__all__ = [
    "ARCH_COLORS",
    "ARCH_LABELS",
    "METHOD_COLORS",
    "METRIC_LABELS",
    "bars",
    "bars_intervals",
    "heatmap",
    "histograms",
    "label",
    "pareto",
    "use_style",
]
