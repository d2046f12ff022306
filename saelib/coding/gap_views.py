"""Chapter 02's other views of the amortisation gap: a sweep, ISTA iterations, ITO at many L0.

- :func:`code_regression_sweep`: setting b (encoders regress the true codes) against the
  oracle over problem sizes ``(N, M, K)``: where the gap grows;
- :func:`iteration_curve` and :func:`inference_points`: ISTA and FISTA after a fixed number
  of iterations against the trained encoders, at their inference FLOPs per sample (the
  reviewers' objection: ISTA iterates the same low-rank operator);
- :func:`ito_on_topk`: one TopK SAE's decoder, its own encoder against gradient pursuit and
  OMP at several L0.

``problem(seed, n, m, k)`` returns a split ``(train, val, test)`` as in
:mod:`saelib.coding.gap`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import Tensor

from saelib import flops
from saelib.coding import cost
from saelib.coding.amortisation import EncoderFitConfig, fit_encoder
from saelib.coding.gap import KNOWN_CODES, KNOWN_DICTIONARY, GapExperiment
from saelib.coding.ito import SOLVERS, sae_ito
from saelib.data import TensorBatches
from saelib.metrics import fvu, mcc
from saelib.saes import SAEConfig, inference, make_sae
from saelib.saes.topk import topk_activation
from saelib.training import TrainConfig, Trainer

__all__ = [
    "code_regression_sweep",
    "inference_points",
    "ito_on_topk",
    "iteration_curve",
    "sweep_grid",
]


def sweep_grid(
    n_features: Sequence[int], d: int, mean_active: float, ds: Sequence[int], ks: Sequence[float]
) -> list[tuple]:
    """The sweep's ``(N, M, K)``, sorted: each of ``n_features`` at ``(d, mean_active)``, then
    each of ``ds`` and of ``ks`` at the largest ``N``."""
    n_max = max(n_features)
    grid = {(n, d, mean_active) for n in n_features}
    grid |= {(n_max, m, mean_active) for m in ds}
    grid |= {(n_max, d, k) for k in ks}
    return sorted(grid)


def code_regression_sweep(
    exp: GapExperiment, problem: Callable, seed: int, grid: Sequence[tuple]
) -> pd.DataFrame:
    """Setting b over ``grid``: the oracle's test MCC (FISTA on the true dictionary, best
    ``lambda`` of ``lambdas`` on validation), the SAE's and the 1-hidden MLP's after
    regressing the true codes, and each encoder's gap to the oracle. One row per ``(N, M, K)``."""
    rows = []
    for n, m, k in grid:
        train, val, test = problem(seed, n, m, k)
        row = {"N": n, "M": m, "K": k}
        D = train.dictionary
        oracle = max(
            exp.lambdas, key=lambda lam: mcc(val.codes, exp.fista(D, val.x, lam).codes).mcc
        )
        row["oracle"] = mcc(test.codes, exp.fista(D, test.x, oracle).codes).mcc
        for name in ("SAE", "MLP (1 hidden)"):
            sae = make_sae(exp.sae_config(name, seed, n, m)).to(exp.device)
            fit = EncoderFitConfig("known_codes", exp.n_steps, exp.batch_size, exp.lr, seed=seed)
            fit_encoder(sae, train.x, D, fit, codes=train.codes)
            with torch.no_grad():
                row[name] = mcc(test.codes, sae.encode(test.x)).mcc
        rows.append(row | {"seed": seed})
    sweep = pd.DataFrame(rows)
    sweep["SAE gap"] = sweep["oracle"] - sweep["SAE"]
    sweep["MLP gap"] = sweep["oracle"] - sweep["MLP (1 hidden)"]
    return sweep


def iteration_curve(
    D: Tensor, x: Tensor, codes: Tensor, l1: float, iterations: Sequence[int]
) -> pd.DataFrame:
    """ISTA and FISTA (non-negative, at ``l1``) on ``D [n, m]`` after exactly each number of
    ``iterations`` (no early stop): code MCC against ``codes`` and FLOPs per sample."""
    n, m = D.shape
    rows = []
    for solver in ("ista", "fista"):
        for t in iterations:
            r = SOLVERS[solver](D, x, l1, nonneg=True, max_iter=t, tol=1e-12)
            rows.append({"method": solver.upper(), "iterations": t,
                         "flops": cost.ito_flops(solver, n, m, n_iter=t),
                         "mcc": mcc(codes, r.codes).mcc})  # fmt: skip
    return pd.DataFrame(rows)


def inference_points(exp: GapExperiment, best: pd.DataFrame, n: int, m: int) -> pd.DataFrame:
    """The encoders' chosen rows of settings a and b (every seed, not the oracle), with their
    inference FLOPs per sample (``inference_flops``)."""
    settings = best["setting"].isin([KNOWN_DICTIONARY, KNOWN_CODES])
    points = best[settings & (best["method"] != "oracle")].copy()
    points["inference_flops"] = [
        flops.sae_encode_flops(exp.sae_config(method, 0, n, m)) for method in points["method"]
    ]
    return points


def ito_on_topk(
    exp: GapExperiment, train_x: Tensor, test_x: Tensor, n_features: int, k: int,
    l0s: Sequence[int], seed: int,
) -> pd.DataFrame:  # fmt: skip
    """Train a TopK SAE (``n_features`` latents, ``k`` active) on ``train_x``; then at each of
    ``l0s`` reconstruct ``test_x`` with its decoder three ways: the SAE's own encoder keeping
    its top-L0 pre-activations, gradient pursuit (non-negative) and OMP. One row per method
    and L0: method, l0, fvu (test) and whether l0 is the trained k."""
    cfg = SAEConfig(d_in=train_x.shape[1], d_sae=n_features, architecture="topk", k=k, seed=seed)
    sae = make_sae(cfg)
    train = TrainConfig(n_steps=exp.n_steps, lr=exp.lr, device=exp.device, progress=False)
    Trainer(sae, train).fit(TensorBatches(train_x, exp.batch_size, seed=seed))
    rows = []
    with inference(sae):
        with torch.no_grad():
            pre = sae(test_x).pre_acts
        for l0 in l0s:
            with torch.no_grad():
                x_hat = sae.decode(topk_activation(pre, l0))
            gp = sae_ito(sae, test_x, "gradient_pursuit", l0=l0, nonneg=True)
            omp = sae_ito(sae, test_x, "omp", l0=l0)
            for method, rec in (("TopK encoder", x_hat), ("gradient pursuit", gp.x_hat),
                                ("OMP", omp.x_hat)):  # fmt: skip
                rows.append({"method": method, "l0": l0, "fvu": fvu(test_x, rec)})
    table = pd.DataFrame(rows)
    table["trained k"] = table["l0"] == k
    return table
