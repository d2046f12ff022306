"""Chapter 04's figures draw means with intervals from a table of seeds."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from saelib.plotting.correlated import grouped_intervals, lines_intervals  # noqa: E402


def _table():
    rows = [{"coeff": c, "penalty": p, "seed": s, "y": c + s * 0.1, "coder": p}
            for c in (0.1, 1.0) for p in ("p=1", "p=3") for s in range(3)]  # fmt: skip
    return pd.DataFrame(rows)


def test_lines_intervals_one_line_per_group_with_error_bars():
    fig, ax = plt.subplots()
    lines_intervals(ax, _table(), "coeff", "y", "penalty", logx=True)
    assert len(ax.containers) == 2  # one errorbar container per group
    line = ax.containers[0].lines[0]
    assert list(line.get_xdata()) == [0.1, 1.0]
    assert list(line.get_ydata()) == pytest.approx([0.2, 1.1])  # means over the seeds
    assert ax.get_xscale() == "log"
    plt.close(fig)


def test_grouped_intervals_follows_the_order():
    fig, ax = plt.subplots()
    grouped_intervals(ax, _table(), "coder", "y", "penalty", order=["p=3", "p=1"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["p=3", "p=1"]
    plt.close(fig)
