"""The amortisation-gap experiment of chapter 02: encoders, ITO and sparse coding, FLOP-matched.

On data with known codes and dictionary, every method is scored by code MCC against the true
codes (and dictionary MMCS where it learns a dictionary), in O'Neill et al.'s three settings:

- ``a: known dictionary``: encoders fitted through the frozen true dictionary
  (:func:`~saelib.coding.amortisation.fit_encoder`), against the oracle, FISTA on it;
- ``b: known codes``: encoders regressing the true codes;
- ``c: both unknown``: SAEs trained by the Trainer and measured along training, SAE+ITO (FISTA
  on each SAE's decoder) and sparse coding, each with its total FLOPs (training + inference on
  the test set, ``saelib.flops`` and ``saelib.coding.cost``).

The FISTA-based methods minimise ``0.5 ||x - c D||^2 + (lam / 2) ||c||_1``, the SAE objective
``||x - x_hat||^2 + lam ||f||_1`` halved, so one ``lam`` means the same trade-off for both.
A split is ``(train, val, test)``, batches with ``x``, ``codes`` and ``dictionary``; the
training inputs are ``train.x``, each method's ``lam`` is chosen on ``val``, every figure is on
``test``. :mod:`saelib.coding.gap_views` holds the chapter's other experiments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import pandas as pd
import torch
from torch import Tensor

from saelib import flops
from saelib.coding import cost
from saelib.coding.amortisation import EncoderFitConfig, fit_encoder, snapshots
from saelib.coding.lasso import fista
from saelib.coding.sparse_coding import SparseCodingConfig, fit_dictionary
from saelib.data import TensorBatches
from saelib.metrics import matched_cosines, mcc
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

KNOWN_DICTIONARY, KNOWN_CODES, BOTH_UNKNOWN = (
    "a: known dictionary",
    "b: known codes",
    "c: both unknown",
)

__all__ = ["GapExperiment", "choose_lambda", "draw_splits", "flop_curves", "summarise"]


@dataclass(frozen=True)
class GapExperiment:
    """The chapter's training and solver settings (its parameters of the same names)."""

    n_steps: int  # Adam steps of every encoder and SAE
    batch_size: int
    lr: float
    sparsity_coeffs: Sequence[float]  # lam grid of the methods that train an encoder
    solver_coeffs: Sequence[float]  # lam grid of the FISTA-based methods
    mlp_hidden_one: Sequence[int]
    mlp_hidden_two: Sequence[int]
    solver_max_iter: int  # FISTA's iteration cap
    sc_rounds: Sequence[int]  # sparse-coding alternations; the last is the reported run
    snapshot_steps: Sequence[int]  # where the SAEs of setting c are measured along training
    device: str = "cpu"

    @classmethod
    def from_params(cls, params: dict) -> GapExperiment:
        """The experiment from a chapter's checked parameters (other names are ignored)."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})

    def encoders(self) -> dict[str, dict]:
        """The encoder families compared, by name: the SAE's linear-ReLU encoder and MLPs with
        one and two hidden layers, as ``SAEConfig`` keywords."""
        return {
            "SAE": {},
            "MLP (1 hidden)": {"architecture": "mlp", "mlp_hidden": tuple(self.mlp_hidden_one)},
            "MLP (2 hidden)": {"architecture": "mlp", "mlp_hidden": tuple(self.mlp_hidden_two)},
        }

    def sae_config(self, name: str, seed: int, n: int, m: int) -> SAEConfig:
        """The SAE of encoder family ``name`` for ``n`` latents in ``m`` dimensions."""
        return SAEConfig(d_in=m, d_sae=n, seed=seed, **self.encoders()[name])

    def fista(self, D: Tensor, x: Tensor, lam: float, bias: Tensor | None = None):
        """FISTA for the SAE objective at ``lam`` (``l1 = lam / 2``), non-negative codes."""
        return fista(D, x, lam / 2, nonneg=True, max_iter=self.solver_max_iter, bias=bias)

    def fista_flops(self, n_iter: int, n: int, m: int, n_samples: int) -> int:
        """FLOPs of one FISTA call on ``n_samples`` rows, ``n_iter`` iterations, ``D [n, m]``."""
        per_sample = cost.ito_flops("fista", n, m, n_iter=n_iter)
        return cost.ito_setup_flops("fista", n, m) + n_samples * per_sample


def draw_splits(data, sizes: Sequence[int], seed: int, device: str) -> list:
    """Batches of ``sizes`` rows from ``data`` (anything with ``sample(n, generator=)``), the
    ``i``-th drawn with generator ``1000 (i + 1) + seed``, every tensor moved to ``device``."""
    sets = [data.sample(size, generator=1000 * (i + 1) + seed) for i, size in enumerate(sizes)]
    return [type(b)(*(t.to(device) for t in b)) for b in sets]


class _Seed:
    """One seed's split and what it records: result rows (one per setting, method and lam) and
    FLOP-curve points."""

    def __init__(self, exp: GapExperiment, seed: int, split: Sequence):
        self.exp, self.seed, (self.train, self.val, self.test) = exp, seed, split
        self.D = self.train.dictionary
        self.n, self.m = self.D.shape
        self.n_test = len(self.test.x)
        self.rows: list[dict] = []
        self.curves: list[dict] = []

    def record(self, setting, method, lam, val_codes, test_codes, dictionary=None, total=None):
        self.rows.append({
            "seed": self.seed, "setting": setting, "method": method, "lambda": lam,
            "val_mcc": mcc(self.val.codes, val_codes).mcc,
            "mcc": mcc(self.test.codes, test_codes).mcc,
            "mmcs": math.nan if dictionary is None else matched_cosines(self.D, dictionary).mmcs,
            "dead": int(((test_codes > 0).sum(0) == 0).sum()), "flops": total,
        })  # fmt: skip

    def point(self, method: str, lam: float, step: int, total: int, codes: Tensor, mmcs: float):
        self.curves.append({
            "seed": self.seed, "method": method, "lambda": lam, "step": step, "flops": total,
            "mcc": mcc(self.test.codes, codes).mcc, "mmcs": mmcs,
        })  # fmt: skip

    def fista_flops(self, n_iter: int) -> int:
        return self.exp.fista_flops(n_iter, self.n, self.m, self.n_test)

    def encode_flops(self, cfg: SAEConfig) -> int:
        return self.n_test * flops.sae_encode_flops(cfg)


def three_settings(exp: GapExperiment, seed: int, split: Sequence) -> tuple[list, list]:
    """Every method in the three settings on one seed's ``split``: ``(rows, curves)``, the
    result rows (seed, setting, method, lambda, val_mcc, mcc, mmcs, dead, flops) and the
    FLOP-curve points of setting c (seed, method, lambda, step, flops, mcc, mmcs)."""
    run = _Seed(exp, seed, split)
    for lam in exp.solver_coeffs:  # the oracle: FISTA on the true dictionary
        r_val, r_test = exp.fista(run.D, run.val.x, lam), exp.fista(run.D, run.test.x, lam)
        for setting in (KNOWN_DICTIONARY, BOTH_UNKNOWN):
            total = run.fista_flops(r_test.n_iter)
            run.record(setting, "oracle", lam, r_val.codes, r_test.codes, run.D, total)
    for name in exp.encoders():
        cfg = exp.sae_config(name, seed, run.n, run.m)
        for lam in exp.sparsity_coeffs:  # (a) known dictionary: only the encoder learns
            fit = EncoderFitConfig(
                "known_dictionary", exp.n_steps, exp.batch_size, exp.lr, lam, seed=seed
            )
            sae = _fitted_encoder(run, cfg, fit)
            total = cost.encoder_fit_flops(cfg, exp.n_steps, exp.batch_size, "known_dictionary")
            total += run.encode_flops(cfg)
            run.record(KNOWN_DICTIONARY, name, lam, *_codes(sae, run), run.D, total)
        fit = EncoderFitConfig("known_codes", exp.n_steps, exp.batch_size, exp.lr, seed=seed)
        sae = _fitted_encoder(run, cfg, fit)  # (b) known codes: no lambda
        total = cost.encoder_fit_flops(cfg, exp.n_steps, exp.batch_size, "known_codes")
        run.record(
            KNOWN_CODES, name, math.nan, *_codes(sae, run), None, total + run.encode_flops(cfg)
        )
        for lam in exp.sparsity_coeffs:  # (c) both unknown, measured along training
            _train_and_measure(run, name, cfg, lam)
    for lam in exp.solver_coeffs:  # (c) sparse coding, at each number of rounds
        _sparse_coding(run, lam)
    return run.rows, run.curves


def _fitted_encoder(run: _Seed, cfg: SAEConfig, fit: EncoderFitConfig):
    sae = make_sae(cfg).to(run.exp.device)
    codes = run.train.codes if fit.setting == "known_codes" else None
    fit_encoder(sae, run.train.x, run.D, fit, codes=codes)
    return sae


@torch.no_grad()
def _codes(sae, run: _Seed) -> tuple[Tensor, Tensor]:
    """The SAE's codes of the validation and the test inputs."""
    return sae.encode(run.val.x), sae.encode(run.test.x)


def _train_and_measure(run: _Seed, name: str, cfg: SAEConfig, lam: float) -> None:
    """Setting c for one encoder family and ``lam``: train, measure at the snapshots and at the
    end (SAE+ITO too for the SAE), record the final SAE (and SAE+ITO)."""
    exp, test = run.exp, run.test
    sae = make_sae(cfg)
    tcfg = TrainConfig(n_steps=exp.n_steps, lr=exp.lr, sparsity_coeff=lam, lr_decay_steps=0,
                       device=exp.device, progress=False)  # fmt: skip

    def measure(step: int) -> None:
        spent = flops.training_flops(cfg, step, exp.batch_size)
        f = sae.encode(test.x)
        r = exp.fista(sae.W_dec, test.x, lam, bias=sae.b_dec)
        mmcs = matched_cosines(run.D, sae.W_dec).mmcs
        run.point(name, lam, step, spent + run.encode_flops(cfg), f, mmcs)
        if name == "SAE":  # SAE+ITO minimises the SAE's own objective on its decoder
            run.point("SAE+ITO", lam, step, spent + run.fista_flops(r.n_iter), r.codes, mmcs)

    batches = TensorBatches(run.train.x, exp.batch_size, seed=run.seed)
    Trainer(sae, tcfg).fit(snapshots(batches, exp.snapshot_steps, measure))
    with torch.no_grad():
        measure(exp.n_steps)
    last = run.curves[-1] if name != "SAE" else run.curves[-2]
    W_dec = sae.W_dec.detach()
    run.record(BOTH_UNKNOWN, name, lam, *_codes(sae, run), W_dec, last["flops"])
    if name == "SAE":  # SAE+ITO: FISTA on this SAE's decoder, for the SAE's objective
        val_codes = exp.fista(sae.W_dec, run.val.x, lam, sae.b_dec).codes
        test_codes = exp.fista(sae.W_dec, test.x, lam, sae.b_dec).codes
        run.record(
            BOTH_UNKNOWN, "SAE+ITO", lam, val_codes, test_codes, W_dec, run.curves[-1]["flops"]
        )


def _sparse_coding(run: _Seed, lam: float) -> None:
    """Sparse coding at ``lam`` for each of ``sc_rounds`` (a FLOP-curve point each); the run
    with the last number of rounds is recorded."""
    exp, train, test = run.exp, run.train, run.test
    for rounds in exp.sc_rounds:
        sc = fit_dictionary(train.x, SparseCodingConfig(
            n_atoms=run.n, solver="fista", l1=lam / 2, nonneg=True, n_iter=rounds,
            solver_max_iter=exp.solver_max_iter, seed=run.seed))  # fmt: skip
        r_test = exp.fista(sc.dictionary, test.x, lam)
        total = cost.sparse_coding_flops(
            run.n, run.m, len(train.x), rounds, "fista", n_iter=exp.solver_max_iter
        ) + run.fista_flops(r_test.n_iter)
        mmcs = matched_cosines(run.D, sc.dictionary).mmcs
        run.point("sparse coding", lam, rounds, total, r_test.codes, mmcs)
    val_codes = exp.fista(sc.dictionary, run.val.x, lam).codes
    run.record(BOTH_UNKNOWN, "sparse coding", lam, val_codes, r_test.codes, sc.dictionary, total)


def choose_lambda(results: pd.DataFrame) -> pd.DataFrame:
    """Each method's row at its best ``lambda`` per seed and setting, by validation MCC."""
    best = results.groupby(["seed", "setting", "method"])["val_mcc"].idxmax()
    return results.loc[best].reset_index(drop=True)


def summarise(best: pd.DataFrame) -> pd.DataFrame:
    """Mean (and sd) over seeds per setting and method of the chosen rows."""
    return best.groupby(["setting", "method"], sort=False).agg(
        mcc=("mcc", "mean"), mcc_sd=("mcc", "std"), mmcs=("mmcs", "mean"),
        dead=("dead", "mean"), flops=("flops", "mean"), lam=("lambda", "median"),
    ).reset_index()  # fmt: skip


def flop_curves(curves: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Setting c's FLOP curves at each method's chosen ``lambda``, mean over seeds per step."""
    chosen = best[best["setting"] == BOTH_UNKNOWN][["seed", "method", "lambda"]]
    mean = curves.merge(chosen, on=["seed", "method", "lambda"])
    mean = mean.groupby(["method", "step"], sort=False)[["flops", "mcc", "mmcs"]].mean()
    return mean.reset_index()
