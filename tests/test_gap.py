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
    n_steps=12, batch_size=32, lr=1e-3, lambdas=[0.1, 1.0], mlp_hidden_one=[8],
    mlp_hidden_two=[8, 8], lista_steps=[2], mp_steps=[1, 2], solver_max_iter=20,
    sc_rounds=[1, 2], snapshot_steps=[5],
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
    assert EXP.sae_config("LISTA (2 steps)", 1, 8, 4).lista_steps == 2
    assert list(EXP.encoders()) == ["SAE", "MLP (1 hidden)", "MLP (2 hidden)", "LISTA (2 steps)"]
    without = gap.GapExperiment(**{**EXP.__dict__, "mlp_hidden_two": []})
    assert "MLP (2 hidden)" not in without.encoders()


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
    assert per_setting[gap.BOTH_UNKNOWN] == encoders | {"oracle", "SAE+ITO", "sparse coding",
                                                        "MP-SAE"}  # fmt: skip
    # every method with a lambda has the same grid: oracle (a, c), encoders (a, c), ITO, SC;
    # MP-SAE as many values of its own knob (pursuit steps) in the lambda column
    for (setting, method), part in rows.groupby(["setting", "method"]):
        expected = [math.nan] if setting == gap.KNOWN_CODES else [0.1, 1.0]
        expected = EXP.mp_steps if method == gap.MP_SAE else expected
        assert part["lambda"].tolist() == pytest.approx(expected, nan_ok=True), (setting, method)
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
    for method in EXP.encoders():
        part = curves[curves["method"] == method]
        assert part["step"].tolist() == [5, 12, 5, 12] and part["val_loss"].notna().all()
    sc = curves[curves["method"] == "sparse coding"]
    assert sc["step"].tolist() == [1, 2, 1, 2] and sc["val_loss"].isna().all()


def test_sae_ito_runs_on_the_sae_of_the_sae_row(settings):
    """SAE+ITO: every row on the decoder of the SAE chosen on validation (same decoder, so
    the same MMCS), its inference lambda over the whole grid; its curve along that SAE's
    training at the inference lambda chosen on validation."""
    rows, curves = settings
    best = gap.choose_lambda(rows)
    c = best[best["setting"] == gap.BOTH_UNKNOWN].set_index("method")
    ito = rows[rows["method"] == "SAE+ITO"]
    assert (ito["train_lambda"] == c.loc["SAE", "lambda"]).all()
    assert (ito["mmcs"] == c.loc["SAE", "mmcs"]).all()
    assert sorted(ito["lambda"]) == [0.1, 1.0]
    ito_curve = curves[curves["method"] == "SAE+ITO"]
    assert ito_curve["step"].tolist() == [5, 12]
    assert (ito_curve["lambda"] == c.loc["SAE+ITO", "lambda"]).all()
    sae_curve = curves[(curves["method"] == "SAE") & (curves["lambda"] == c.loc["SAE", "lambda"])]
    assert ito_curve["mmcs"].tolist() == sae_curve["mmcs"].tolist()
    # its FLOPs: the SAE's training plus FISTA on the test set
    training = c.loc["SAE", "flops"] - 64 * 2 * 8 * 4  # less the SAE's own test encoding
    assert c.loc["SAE+ITO", "flops"] > training


def test_choose_lambda_summarise_and_flop_curves_by_hand():
    results = pd.DataFrame({
        "seed": [0, 0, 1, 1, 2, 2], "setting": ["c: both unknown"] * 6, "method": ["SAE"] * 6,
        "lambda": [0.1, 0.3] * 3, "val_mcc": [0.5, 0.7, 0.9, 0.2, 0.4, 0.4],
        "mcc": [0.4, 0.6, 0.8, 0.1, 0.5, 0.0], "mmcs": [1.0] * 6, "dead": [0, 1, 2, 3, 4, 5],
        "flops": [1] * 6,
    })  # fmt: skip
    best = gap.choose_lambda(results)  # a tie goes to the first lambda of the grid
    assert best["lambda"].tolist() == [0.3, 0.1, 0.1] and best["mcc"].tolist() == [0.6, 0.8, 0.5]
    summary = gap.summarise(best).iloc[0]
    half = 4.302652729911275 * 0.15275252316519466 / math.sqrt(3)  # t_{0.975, 2} sd / sqrt(n)
    assert summary["mcc"] == pytest.approx(19 / 30) and summary["n"] == 3
    assert summary["high"] - summary["mcc"] == pytest.approx(half)
    assert summary["dead"] == pytest.approx(7 / 3)
    curves = pd.DataFrame({
        "seed": [0, 0, 1, 1], "method": ["SAE"] * 4, "lambda": [0.3, 0.1, 0.1, 0.3],
        "step": [5, 5, 5, 5], "flops": [10, 99, 30, 99], "mcc": [0.2, 0.0, 0.4, 0.0],
        "mmcs": [0.0] * 4,
    })  # fmt: skip
    chosen = gap.flop_curves(curves, best)  # the rows at each seed's chosen lambda
    assert chosen[["seed", "flops", "mcc"]].values.tolist() == [[0, 10, 0.2], [1, 30, 0.4]]


def test_edge_choices_by_hand():
    best = pd.DataFrame({
        "seed": [0, 1, 2, 0, 0], "setting": ["c: both unknown"] * 3 + ["a: known dictionary"] * 2,
        "method": ["SAE"] * 3 + ["oracle", "SAE"], "lambda": [0.1, 3.0, 0.3, 0.1, math.nan],
    })  # fmt: skip
    table = gap.edge_choices(best, [0.1, 0.3, 3.0]).set_index(["setting", "method"])
    assert table.loc[("c: both unknown", "SAE")].tolist() == [3, 1, 1]
    assert table.loc[("a: known dictionary", "oracle")].tolist() == [1, 1, 0]
    assert ("a: known dictionary", "SAE") not in table.index  # no lambda (NaN): not counted


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
    points = gap_views.inference_points(EXP, best, 8, 4)
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
    assert plots.setting_bars(axes, best) is axes and len(axes[0].patches) == 5
    fig, axes = plt.subplots(1, 2)
    oracle = best[best["method"] == "oracle"]
    chosen = gap.flop_curves(curves, best)
    plots.flop_curves(axes, chosen, oracle)
    n_methods = chosen["method"].nunique()
    assert len(axes[0].lines) == n_methods  # one line (and band) per method, and the star
    assert len(axes[0].collections) == n_methods + 1
    ax = plots.loss_curves(plt.subplots()[1], chosen)
    # the SAE families, MP-SAE and the line at 1
    assert len(ax.lines) == len(EXP.encoders()) + 2
    sweep = pd.DataFrame({"N": [8, 16, 8, 16], "seed": [0, 0, 1, 1], "oracle": [1, 1, 1, 0.9],
                          "SAE": [0, 0, 0.1, 0], "MLP (1 hidden)": [1, 0, 1, 0.5]})  # fmt: skip
    ax = plots.sweep_lines(plt.subplots()[1], sweep)
    assert len(ax.lines) == 3 and ax.lines[0].get_ydata().tolist() == [1, 0.95]
    ax = plots.ito_against_encoder(plt.subplots()[1], pd.DataFrame(
        {"method": ["OMP", "OMP"], "l0": [1, 2], "fvu": [0.5, 0.2]}), 2)  # fmt: skip
    assert len(ax.lines) == 2  # the method and the trained-k line
    train, _, test = problem(0)
    curve = gap_views.iteration_curve(train.dictionary, test.x, test.codes, 0.05, [1, 2])
    points = gap_views.inference_points(EXP, best, 8, 4)
    ax = plots.iterations(plt.subplots()[1], curve, points)
    assert len(ax.lines) >= 2 and len(ax.containers) == len(points)
    plt.close("all")
    assert math.isfinite(best["mcc"].sum())
    assert plots.color("LISTA (4 steps)") != plots.color("SAE")


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
    broken = {
        "n_steps": (max(params["snapshot_steps"]), "snapshot step must come before the end"),
        "topk_l0s": ([2, 128], r"topk_l0s=\[2, 128\] is not allowed"),
        "lista_steps": ([2], "must contain 4"),
        "lambdas": ([0.1], "at least two values"),
        "sweep_n_features": ([16, 16], "at least two values of sweep_n_features"),
        "mlp_hidden_two": ([8], "two widths"),
    }
    for name, (value, message) in broken.items():
        with pytest.raises(ValueError, match=message):
            check_chapter(chapter_defaults() | {name: value}, "02_amortisation_gap")
    with pytest.raises(ValueError, match="must contain it"):
        check_chapter(chapter_defaults() | {"topk_l0s": [2, 4]}, "02_amortisation_gap")
