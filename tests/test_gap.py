"""Chapter 02's experiment (coding.gap, coding.gap_views) and its figures (plotting)."""

import json
import math
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from saelib.coding import cost, gap, gap_views  # noqa: E402
from saelib.coding.lasso import fista  # noqa: E402
from saelib.metrics import mcc  # noqa: E402
from saelib.parameters import check_chapter  # noqa: E402
from saelib.plotting import amortisation as plots  # noqa: E402
from saelib.toys.synthetic import SyntheticConfig, SyntheticData  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXP = gap.GapExperiment(
    n_steps=12, batch_size=32, lr=1e-3, sparsity_coeffs=[0.3], solver_coeffs=[0.1, 1.0],
    mlp_hidden_one=[8], mlp_hidden_two=[8, 8], solver_max_iter=20, sc_rounds=[1, 2],
    snapshot_steps=[5],
)  # fmt: skip


def problem(seed, n=8, m=4, k=2.0):
    data = SyntheticData(SyntheticConfig(n_features=n, d=m, mean_active=k, seed=seed))
    return gap.draw_splits(data, (256, 64, 64), seed, "cpu")


@pytest.fixture(scope="module")
def settings():
    rows, curves = gap.three_settings(EXP, 0, problem(0))
    return pd.DataFrame(rows), pd.DataFrame(curves)


def test_from_params_takes_its_fields_and_ignores_the_rest():
    params = {f: getattr(EXP, f) for f in EXP.__dataclass_fields__} | {"seed": 3, "d": 4}
    assert gap.GapExperiment.from_params(params) == EXP
    assert EXP.sae_config("MLP (2 hidden)", 1, 8, 4).mlp_hidden == (8, 8)
    assert EXP.sae_config("SAE", 1, 8, 4).architecture == "relu"


class Batch(NamedTuple):
    x: torch.Tensor


def test_draw_splits_seeds_each_split_and_keeps_the_type():
    drawn = []

    class Data:
        def sample(self, n, generator):
            drawn.append((n, generator))
            return Batch(torch.zeros(n))

    splits = gap.draw_splits(Data(), (5, 6, 7), 2, "cpu")
    assert drawn == [(5, 1002), (6, 2002), (7, 3002)]
    assert [len(s.x) for s in splits] == [5, 6, 7] and all(type(s) is Batch for s in splits)


def test_three_settings_rows_and_the_oracle_by_hand(settings):
    rows, curves = settings
    per_setting = rows.groupby("setting")["method"].apply(set).to_dict()
    encoders = set(EXP.encoders())
    assert per_setting[gap.KNOWN_DICTIONARY] == encoders | {"oracle"}
    assert per_setting[gap.KNOWN_CODES] == encoders
    assert per_setting[gap.BOTH_UNKNOWN] == encoders | {"oracle", "SAE+ITO", "sparse coding"}
    assert len(rows) == 2 * 2 + 3 * (1 + 1 + 1) + 1 + 2  # oracle x2, encoders a/b/c, ITO, SC
    assert rows[rows["setting"] == gap.KNOWN_CODES]["lambda"].isna().all()
    train, val, test = problem(0)
    D = train.dictionary
    r = fista(D, test.x, 1.0 / 2, nonneg=True, max_iter=20)
    oracle = rows[(rows["method"] == "oracle") & (rows["lambda"] == 1.0)]
    assert (oracle["mcc"] == mcc(test.codes, r.codes).mcc).all()
    n, m = D.shape
    flops = cost.ito_setup_flops("fista", n, m) + 64 * cost.ito_flops(
        "fista", n, m, n_iter=r.n_iter
    )
    assert (oracle["flops"] == flops).all() and (oracle["mmcs"] > 0.999).all()
    # setting c is measured at each snapshot and at the end; sparse coding at each round count
    steps = curves[curves["method"] == "SAE"]["step"].tolist()
    assert steps == [5, 12] and curves[curves["method"] == "sparse coding"]["step"].tolist() == [
        1, 2, 1, 2
    ]  # fmt: skip


def test_choose_lambda_summarise_and_flop_curves_by_hand():
    results = pd.DataFrame({
        "seed": [0, 0, 1, 1], "setting": ["c: both unknown"] * 4, "method": ["SAE"] * 4,
        "lambda": [0.1, 0.3, 0.1, 0.3], "val_mcc": [0.5, 0.7, 0.9, 0.2],
        "mcc": [0.4, 0.6, 0.8, 0.1], "mmcs": [1.0] * 4, "dead": [0, 1, 2, 3], "flops": [1] * 4,
    })  # fmt: skip
    best = gap.choose_lambda(results)
    assert best["lambda"].tolist() == [0.3, 0.1] and best["mcc"].tolist() == [0.6, 0.8]
    summary = gap.summarise(best)
    assert summary["mcc"].item() == pytest.approx(0.7) and summary["dead"].item() == 1.5
    curves = pd.DataFrame({
        "seed": [0, 0, 1, 1], "method": ["SAE"] * 4, "lambda": [0.3, 0.1, 0.1, 0.3],
        "step": [5, 5, 5, 5], "flops": [10, 99, 30, 99], "mcc": [0.2, 0.0, 0.4, 0.0],
        "mmcs": [0.0] * 4,
    })  # fmt: skip
    mean = gap.flop_curves(curves, best)  # the rows at each seed's chosen lambda
    assert mean[["flops", "mcc"]].values.tolist() == [[20.0, pytest.approx(0.3)]]


def test_sweep_grid_by_hand():
    grid = gap_views.sweep_grid([16, 32], 8, 3.0, [8, 16], [6.0])
    assert grid == [(16, 8, 3.0), (32, 8, 3.0), (32, 8, 6.0), (32, 16, 3.0)]


def test_code_regression_sweep_gaps():
    sweep = gap_views.code_regression_sweep(EXP, problem, 0, [(8, 4, 2.0)])
    row = sweep.iloc[0]
    assert row["SAE gap"] == row["oracle"] - row["SAE"]
    assert row["MLP gap"] == row["oracle"] - row["MLP (1 hidden)"]
    assert 0 < row["oracle"] <= 1


def test_iteration_curve_one_step_is_the_same_for_ista_and_fista():
    train, _, test = problem(0)
    curve = gap_views.iteration_curve(train.dictionary, test.x, test.codes, 0.05, [1, 8])
    by = curve.set_index(["method", "iterations"])
    assert by.loc[("ISTA", 1), "mcc"] == by.loc[("FISTA", 1), "mcc"]  # FISTA's first step is ISTA's
    assert by.loc[("FISTA", 8), "flops"] == 8 * 4 * 8 * 4


def test_inference_points_are_the_encoders_of_a_and_b(settings):
    best = gap.choose_lambda(settings[0])
    points = gap_views.inference_points(EXP, best, 0, 8, 4)
    assert set(points["setting"]) == {gap.KNOWN_DICTIONARY, gap.KNOWN_CODES}
    assert "oracle" not in set(points["method"])
    sae = points[points["method"] == "SAE"]["inference_flops"]
    assert (sae == 2 * 8 * 4).all()


def test_ito_on_topk_rows():
    train, _, test = problem(0, 16, 8, 2.0)
    table = gap_views.ito_on_topk(EXP, train.x, test.x, 16, 2, [1, 2, 4], 0)
    assert len(table) == 9 and table[table["trained k"]]["l0"].unique().tolist() == [2]
    omp = table[table["method"] == "OMP"]["fvu"].tolist()
    assert omp == sorted(omp, reverse=True)  # more atoms, a smaller OMP residual


def test_figures_draw_on_the_given_axes(settings):
    rows, curves = settings
    best = gap.choose_lambda(rows)
    fig, axes = plt.subplots(1, 3)
    assert plots.setting_bars(axes, best) is axes and len(axes[0].patches) == 4
    fig, axes = plt.subplots(1, 2)
    oracle = best[best["method"] == "oracle"]
    plots.flop_curves(axes, gap.flop_curves(curves, best), oracle)
    assert len(axes[0].lines) == 5 and len(axes[0].collections) == 1  # methods of c, the star
    fig, axes = plt.subplots(1, 1)
    sweep = pd.DataFrame({"N": [8, 16], "M": [4, 4], "oracle": [1, 1], "SAE": [0, 0],
                          "MLP (1 hidden)": [1, 0]})  # fmt: skip
    plots.sweep_lines([axes], sweep, [("N", {"M": 4})])
    assert len(axes.lines) == 3 and axes.get_title() == "M=4"
    ax = plots.ito_against_encoder(plt.subplots()[1], pd.DataFrame(
        {"method": ["OMP", "OMP"], "l0": [1, 2], "fvu": [0.5, 0.2]}), 2)  # fmt: skip
    assert len(ax.lines) == 2  # the method and the trained-k line
    train, _, test = problem(0)
    curve = gap_views.iteration_curve(train.dictionary, test.x, test.codes, 0.05, [1, 2])
    points = gap_views.inference_points(EXP, best, 0, 8, 4)
    ax = plots.iterations(plt.subplots()[1], curve, points)
    assert len(ax.lines) == 2 and len(ax.collections) == len(points)
    plt.close("all")
    assert math.isfinite(best["mcc"].sum())


def chapter_defaults() -> dict:
    """The parameters cell of notebooks/02_amortisation_gap.ipynb, executed."""
    nb = json.loads((ROOT / "notebooks/02_amortisation_gap.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)  # noqa: S102
    return {k: v for k, v in namespace.items() if k != "__builtins__"}


def test_the_schema_accepts_the_chapter_defaults_and_names_a_broken_rule():
    params = check_chapter(chapter_defaults(), "02_amortisation_gap")
    assert params["device"] in ("cpu", "cuda") and gap.GapExperiment.from_params(params)
    with pytest.raises(ValueError, match="snapshot step must come before the end"):
        check_chapter(chapter_defaults() | {"n_steps": 1000}, "02_amortisation_gap")
    with pytest.raises(ValueError, match=r"topk_l0s=\[2, 128\] is not allowed"):
        check_chapter(chapter_defaults() | {"topk_l0s": [2, 128]}, "02_amortisation_gap")
