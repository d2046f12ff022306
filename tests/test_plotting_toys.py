"""Tests for saelib.plotting.toys: what each figure draws, on hand-built tables."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from saelib.plotting import toys as pt  # noqa: E402
from saelib.plotting.correlated import lines_intervals  # noqa: E402

SEEDS = pd.DataFrame(
    {"l1": [0.1, 0.1, 0.1, 0.3], "lr": [1, 1, 2, 1], "gap": [-0.2, 0.4, 0.5, -0.6]}
)


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_mean_interval_grid_by_hand():
    means, text = pt.mean_interval_grid(SEEDS, "gap", "l1", "lr")
    assert means.loc[0.1, 1] == pytest.approx(0.1) and means.loc[0.3, 1] == pytest.approx(-0.6)
    assert np.isnan(means.loc[0.3, 2])
    half = 12.706 * np.std([-0.2, 0.4], ddof=1) / np.sqrt(2)  # t(0.975, 1 dof) sd / sqrt(n): 3.81
    assert text.loc[0.1, 1] == f"0.10\n±{half:.2f}" and text.loc[0.1, 2] == "0.50\n±0.00"


def test_seed_heatmap_symmetric_scale(ax):
    pt.seed_heatmap(ax, SEEDS.dropna(), "gap", "l1", "lr", symmetric=True, cmap="coolwarm")
    assert ax.images[0].get_clim() == pytest.approx((-0.6, 0.6))
    assert "0.10\n±3.81" in [t.get_text() for t in ax.texts]


def test_lines_intervals_means_and_bars(ax):
    table = pd.DataFrame({"c": [1, 1, 3, 3], "y": [0.0, 2.0, 1.0, 1.0], "p": ["a"] * 4})
    lines_intervals(ax, table, "c", "y", "p", logx=True)
    line = ax.lines[0]
    assert line.get_xdata().tolist() == [1, 3] and line.get_ydata().tolist() == [1.0, 1.0]
    assert ax.get_xscale() == "log"


def test_seed_strips_dots_and_mean_bars(ax):
    table = pd.DataFrame({"variant": ["b", "a", "b"], "fvu": [0.2, 0.5, 0.4]})
    pt.seed_strips(ax, table, "fvu", "variant", colors={"a": "red"}, horizontal=False, scale=10)
    first, second = ax.collections
    assert first.get_offsets().tolist() == [[0, 2.0], [0, 4.0]]  # "b" first: order of appearance
    assert second.get_offsets().tolist() == [[1, 5.0]]
    bar = ax.lines[0]
    assert bar.get_xdata() == pytest.approx([-0.3, 0.3]) and bar.get_ydata() == pytest.approx(
        [3, 3]
    )
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "a"]


def test_frequencies_by_role_and_recovery(ax):
    roles = np.array(["parent", "child", "independent", "child"], dtype=object)
    pt.frequencies_by_role(ax, torch.tensor([0.5, 0.2, 0.1, 0.05]), roles)
    sizes = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    assert sizes == {"parent": 1, "child": 2, "co-occurring pair": 0, "independent": 1}
    fig, other = plt.subplots()
    pt.recovery_vs_frequency(other, torch.tensor([0.1, 0.2]), {"A": np.array([0.9, 1.0])},
                             {"A": "red"})  # fmt: skip
    assert np.allclose(other.collections[0].get_offsets(), [[0.1, 0.9], [0.2, 1.0]])
    plt.close(fig)


def test_metric_lines_styles(ax):
    table = pd.DataFrame({"v": ["p", "p", "q"], "l0": [1, 2, 3], "fvu": [0.3, 0.2, 0.1]})
    pt.metric_lines(ax, table, "l0", "fvu", "v", styles={"p": "--"}, default_style=":")
    assert [(ln.get_label(), ln.get_linestyle()) for ln in ax.lines] == [("p", "--"), ("q", ":")]
    assert list(ax.lines[0].get_xdata()) == [1, 2]


def test_composed_toy_draws_every_direction(ax):
    dictionary = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    composed = torch.tensor([[1.0, 1.0], [1.0, -1.0]]) / 2**0.5
    pt.composed_toy(ax, torch.zeros(5, 2), dictionary, composed)
    names = [t.get_text() for t in ax.texts if t.get_text()]  # arrows are empty annotations
    assert len(ax.lines) == 2 and names == ["x1", "x2", "y1", "y2"]
