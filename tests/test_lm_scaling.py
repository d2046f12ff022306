"""The power-law fit of the scaling section, and the language-model figures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from saelib.lm.scaling import fit_power_law, log_curvature  # noqa: E402
from saelib.plotting import lm as plots  # noqa: E402


def test_exact_power_law_is_recovered():
    n = np.array([64.0, 128.0, 256.0, 512.0])
    law = fit_power_law(n, 3.0 * n**-0.25)
    assert law.b == pytest.approx(0.25, abs=1e-6) and law.a == pytest.approx(3.0, rel=1e-5)
    assert np.abs(law.residuals).max() < 1e-6 and law.b_err < 1e-6
    assert law(1024) == pytest.approx(3.0 * 1024**-0.25, rel=1e-5)


def test_fit_matches_the_log_space_least_squares_line():
    n = np.array([10.0, 20.0, 40.0, 80.0, 160.0])
    y = np.array([0.5, 0.41, 0.30, 0.26, 0.19])
    law = fit_power_law(n, y)
    slope, intercept = np.polyfit(np.log(n), np.log(y), 1)
    assert law.b == pytest.approx(-slope, rel=1e-6) and law.log_a == pytest.approx(intercept)
    assert law.residuals.sum() == pytest.approx(0.0, abs=1e-9)  # least squares with intercept
    assert law.b_err > 0


@pytest.mark.parametrize(
    "n, y, match",
    [([1, 2], [1, 1], "at least 3"), ([1, 2, 3], [1, 1, 0], "positive")],
)
def test_bad_points(n, y, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(n, y)


def _table():
    rows = [("topk", 8, 0.3, 0.5), ("topk", 32, 0.1, 0.2), ("relu", 0.5, 0.2, 0.3)]
    rows += [("relu", 6.0, 0.4, 0.9)]
    table = pd.DataFrame(rows, columns=["architecture", "knob", "fvu", "delta_loss"])
    return table.assign(l0=[8.0, 32.0, 40.0, 5.0])


def test_figures_draw_on_the_given_axes():
    fig, axes = plt.subplots(1, 2)
    assert plots.frontiers(axes, _table()) is axes
    assert len(axes[0].lines) == 2 and axes[1].get_legend() is None
    assert axes[1].get_ylabel() == "delta loss (nats)" and axes[1].get_yscale() == "log"
    fig, axes = plt.subplots(1, 2)
    plots.frontiers(axes, _table(), extra=_table().iloc[:2], extra_label="ITO")
    assert len(axes[0].lines) == 3 and "ITO" in [t.get_text() for t in axes[0].get_legend().texts]
    fig, axes = plt.subplots(1, 2)
    plots.by_hook(axes, _table().assign(hook=["a", "a", "b", "b"]))
    assert len(axes[0].lines) == 2 and axes[1].get_xscale() == "log"
    fig, axes = plt.subplots(1, 2)
    n = np.array([64.0, 128.0, 256.0])
    law = fit_power_law(n, n**-0.5 * np.array([1.0, 1.02, 0.99]))
    plots.power_law(axes, law)
    label = f"FVU = {law.a:.2f} n^-{law.b:.3f}"
    assert [t.get_text() for t in axes[0].get_legend().texts] == ["TopK", label]
    np.testing.assert_allclose(axes[1].lines[-1].get_ydata(), law.residuals)
    plt.close("all")


def test_law_with_an_irreducible_term_is_recovered():
    n = np.array([64.0, 128.0, 256.0, 512.0, 1024.0])
    law = fit_power_law(n, 2.0 * n**-0.5 + 0.05, irreducible=True)
    assert (law.a, law.b, law.c) == pytest.approx((2.0, 0.5, 0.05), rel=1e-4)
    assert np.abs(law.residuals).max() < 1e-6
    pure = fit_power_law(n, 2.0 * n**-0.5, irreducible=True)
    assert pure.c == pytest.approx(0.0, abs=1e-6) and pure.b == pytest.approx(0.5, rel=1e-5)


def test_irreducible_term_needs_four_points():
    with pytest.raises(ValueError, match="at least 4"):
        fit_power_law([1, 2, 3], [3, 2, 1], irreducible=True)


def test_log_curvature_against_hand_computed_slopes():
    n = np.array([100.0, 200.0, 400.0, 800.0])
    assert log_curvature(n, 5 * n**-0.3) == pytest.approx(0.0, abs=1e-12)
    y = np.array([0.4, 0.3, 0.25, 0.24])
    first, last = np.log(0.3 / 0.4) / np.log(2), np.log(0.24 / 0.25) / np.log(2)
    assert log_curvature(n[::-1], y[::-1]) == pytest.approx(last - first)  # order-free
    assert log_curvature(n, 2 * n**-0.5 + 0.05) > 0  # an irreducible term flattens the curve
    with pytest.raises(ValueError, match="positive"):
        log_curvature(n, [1, 0, 1, 1])
