"""evaluate() and compare_frontiers() on cases computed by hand."""

import numpy as np
import pandas as pd
import pytest
import torch

from saelib.evaluation import (
    Run,
    compare_frontiers,
    evaluate,
    frontier_gap,
    one_row,
    recovery_vs_fidelity,
    run_sweep,
)
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig


def test_compare_frontiers_interpolates_in_log_x():
    table = pd.DataFrame(
        {
            "architecture": ["b", "b", "b", "a", "a", "a"],
            "l0": [1.0, 4.0, 16.0, 2.0, 8.0, 32.0],
            "fvu": [0.8, 0.4, 0.2, 0.5, 0.2, 0.05],
        }
    )
    out = compare_frontiers(table, "a", "b")
    # a at L0 2 lies halfway (in log) between b's 1 and 4: 0.6; at 8, between 4 and 16: 0.3
    assert out["l0"].tolist() == [2.0, 8.0]  # 32 is outside b's range: left out
    np.testing.assert_allclose(out["y_b"], [0.6, 0.3])
    np.testing.assert_allclose(out["diff"], [-0.1, -0.1])
    with pytest.raises(ValueError, match="must both have runs"):
        compare_frontiers(table, "a", "c")


def test_frontier_gap_uses_matched_runs_of_both_sides():
    table = pd.DataFrame(
        {
            "architecture": ["b", "b", "b", "a", "a", "a"],
            "l0": [1.0, 4.0, 16.0, 2.0, 8.0, 32.0],
            "fvu": [0.8, 0.4, 0.2, 0.5, 0.2, 0.05],
        }
    )
    # a's runs at 2 and 8 against b: 0.6 - 0.5, 0.3 - 0.2; b's runs at 4 and 16 against a
    # (a at 4: halfway in log between 0.5 and 0.2 = 0.35; at 16: between 0.2 and 0.05 = 0.125)
    expected = np.mean([0.1, 0.1, 0.4 - 0.35, 0.2 - 0.125])
    assert frontier_gap(table, "a", "b") == pytest.approx(expected)
    assert frontier_gap(table, "b", "a") == pytest.approx(-expected)
    apart = table.assign(l0=np.where(table["architecture"] == "a", table["l0"] * 100, table["l0"]))
    assert np.isnan(frontier_gap(apart, "a", "b"))


def test_evaluate_identity_sae_and_sweep():
    # An SAE whose decoder is the identity and encoder passes x through: FVU 0, no shrinkage.
    sae = make_sae(SAEConfig(d_in=3, d_sae=3, tied=True))
    with torch.no_grad():
        sae.W_dec.copy_(torch.eye(3))
    x = torch.rand(50, 3) + 0.1  # positive, so ReLU passes it
    row = evaluate(sae, x, true_dictionary=torch.eye(3), true_codes=x)
    assert row["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert row["l0"] == 3 and row["dead_fraction"] == 0 and row["dense_fraction"] == 1
    assert row["shrinkage"] == pytest.approx(1.0)
    assert row["mmcs"] == pytest.approx(1.0) and row["mcc"] == pytest.approx(1.0)

    runs = [
        Run(SAEConfig(d_in=3, d_sae=4), TrainConfig(n_steps=2, progress=False), {"n": i})
        for i in range(2)
    ]
    table = run_sweep(runs, lambda run: [x[:10]] * 5, x, progress=False, keep_history=True)
    assert table["n"].tolist() == [0, 1] and {"fvu", "l0", "train_mse"} <= set(table.columns)
    assert [r["step"] for r in table["history"][0]] == [2]  # the log of the last step


def test_recovery_vs_fidelity_by_hand():
    table = pd.DataFrame(
        {
            "architecture": ["a", "a", "b", "b"],
            "l0": [2.0, 9.0, 3.0, 6.0],
            "fvu": [0.3, 0.1, 0.2, 0.4],
            "mmcs": [0.95, 0.7, 0.9, 0.8],
        }
    )
    out = recovery_vs_fidelity(table)
    assert out.loc["a"].to_dict() == {
        "best_mmcs": 0.95,
        "l0_best_mmcs": 2.0,
        "mmcs_lowest_fvu": 0.7,
        "l0_lowest_fvu": 9.0,
        "agree": False,
    }
    assert bool(out.loc["b", "agree"]) is True


def test_metrics_row_by_hand():
    from saelib.evaluation import metrics_row

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    x_hat = 0.5 * x  # half of every row: FVU = sum ||x/2||^2 / sum ||x - mean||^2
    f = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0], [0, 0, 0]])
    centred = (x - x.mean(0)).pow(2).sum()
    row = metrics_row(x, x_hat, f, W_dec=torch.eye(3, 2), true_dictionary=torch.eye(2))
    assert row["fvu"] == pytest.approx(((x / 2).pow(2).sum() / centred).item())
    assert row["l0"] == pytest.approx(1.0) and row["dead_fraction"] == pytest.approx(1 / 3)
    assert row["shrinkage"] == pytest.approx(0.5) and row["mmcs"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="true_dictionary needs the coder's W_dec"):
        metrics_row(x, x_hat, f, true_dictionary=torch.eye(2))


def test_sweep_starts_scores_and_returns_eval_mode_saes():
    from saelib.evaluation import sweep

    x = torch.rand(40, 3)
    runs = [
        Run(SAEConfig(d_in=3, d_sae=4, seed=i), TrainConfig(n_steps=2), {"i": i}) for i in (0, 1)
    ]
    started = []

    def start(run):
        started.append(run.labels["i"])
        return make_sae(run.sae)

    table, saes = sweep(
        runs, lambda run: [x[:8]] * 3, lambda sae, run: {"seed": sae.cfg.seed}, start=start,
        progress=False,
    )  # fmt: skip
    assert started == [0, 1] and table["seed"].tolist() == [0, 1] == table["i"].tolist()
    assert list(table.columns[:3]) == ["architecture", "d_sae", "i"] and "train_mse" in table
    assert all(not sae.training for sae in saes)


def test_evaluate_restores_the_mode_even_on_error():
    from saelib.saes import inference

    sae = make_sae(SAEConfig(d_in=3, d_sae=4))
    evaluate(sae, torch.rand(5, 3))
    assert sae.training  # evaluate codes in eval mode, then restores training mode
    with pytest.raises(RuntimeError), inference(sae):
        assert not sae.training
        raise RuntimeError
    assert sae.training
    sae.eval()
    evaluate(sae, torch.rand(5, 3))
    assert not sae.training


def test_one_row_names_a_missing_or_duplicated_selection():
    table = pd.DataFrame({"a": [1, 1, 2], "b": ["x", "y", "x"], "v": [10, 20, 30]})
    assert one_row(table, a=1, b="y")["v"] == 20
    assert one_row(table, a=2)["v"] == 30
    with pytest.raises(ValueError, match=r"expected one row with \{'a': 1\}, found 2"):
        one_row(table, a=1)
    with pytest.raises(ValueError, match="found 0"):
        one_row(table, a=3)
