"""The amortisation-gap experiment of chapter 02: encoders, ITO and sparse coding, FLOP-matched.

On data with known codes and dictionary, every method is scored by code MCC against the true
codes (and dictionary MMCS where it learns a dictionary), in O'Neill et al.'s three settings:

- ``a: known dictionary``: encoders fitted through the frozen true dictionary
  (:func:`~saelib.coding.amortisation.fit_encoder`), against the oracle, FISTA on it;
- ``b: known codes``: encoders regressing the true codes;
- ``c: both unknown``: SAEs trained by the Trainer and measured along training, SAE+ITO (FISTA
  on the decoder of the SAE chosen for the SAE row), the matching-pursuit SAE (MP-SAE, Costa
  et al. 2025: ITO built into training, its encoder ``mp_steps`` pursuit steps on its own
  decoder) and sparse coding, each with its total FLOPs (training + inference on the test
  set, ``saelib.flops`` and ``saelib.coding.cost``).

The encoder families are the SAE's linear-ReLU encoder, MLP encoders (one and, optionally,
two hidden layers) and LISTA (``saelib.saes.lista``) with each of ``lista_steps``.

**One tuning budget.** Every method gets the same grid ``lambdas`` and its value is chosen per
seed on the validation split by code MCC (:func:`choose_lambda`); every figure and effect is
on the test split. MP-SAE has no penalty: its knob is the number of pursuit steps, with as
many values (``mp_steps``, recorded in the ``lambda`` column) as the grid has. The
FISTA-based methods minimise ``0.5 ||x - c D||^2 + (lam / 2) ||c||_1``, the SAE objective
``||x - x_hat||^2 + lam ||f||_1`` halved, so one ``lam`` means the same trade-off for both.
SAE+ITO keeps the SAE row's SAE (its training lambda, ``train_lambda``) and tunes its
*inference* lambda over the same grid. The lambda search is not counted in the FLOPs of any
method.

A split is ``(train, val, test)``, batches with ``x``, ``codes`` and ``dictionary``.
:mod:`saelib.coding.gap_views` holds the chapter's other experiments and
:mod:`saelib.coding.gap_run` one seed of all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import pandas as pd
import torch
from torch import Tensor

from saelib import flops
from saelib.claims import interval
from saelib.coding import cost
from saelib.coding.amortisation import EncoderFitConfig, fit_encoder, snapshots
from saelib.coding.lasso import fista
from saelib.coding.sparse_coding import SparseCodingConfig, fit_dictionary
from saelib.data import TensorBatches
from saelib.metrics import matched_cosines, mcc
from saelib.saes import SAEConfig, inference, make_sae
from saelib.training import TrainConfig, Trainer

KNOWN_DICTIONARY, KNOWN_CODES, BOTH_UNKNOWN = (
    "a: known dictionary",
    "b: known codes",
    "c: both unknown",
)
SAE, ITO, SPARSE_CODING, ORACLE = "SAE", "SAE+ITO", "sparse coding", "oracle"
MP_SAE = "MP-SAE"
MLP_ONE, MLP_TWO = "MLP (1 hidden)", "MLP (2 hidden)"

__all__ = [
    "BOTH_UNKNOWN",
    "KNOWN_CODES",
    "KNOWN_DICTIONARY",
    "MP_SAE",
    "GapExperiment",
    "choose_lambda",
    "draw_splits",
    "edge_choices",
    "flop_curves",
    "both_unknown",
    "known_settings",
    "lista_name",
    "oracle_lambda",
    "summarise",
    "three_settings",
]


def lista_name(steps: int) -> str:
    """The method name of LISTA with ``steps`` unrolled steps, e.g. ``LISTA (4 steps)``."""
    return f"LISTA ({steps} steps)"


@dataclass(frozen=True)
class GapExperiment:
    """The chapter's training and solver settings (its parameters of the same names)."""

    n_steps: int  # Adam steps of every encoder fit and SAE training
    batch_size: int
    lr: float
    lambdas: Sequence[float]  # the one lambda grid of every method
    mlp_hidden_one: Sequence[int]
    mlp_hidden_two: Sequence[int]  # empty: no two-hidden-layer MLP
    lista_steps: Sequence[int]  # one LISTA encoder per entry
    mp_steps: Sequence[int]  # MP-SAE's knob (setting c): pursuit steps, one SAE per entry
    solver_max_iter: int  # FISTA's iteration cap
    sc_rounds: Sequence[int]  # sparse-coding alternations; the last is the reported run
    snapshot_steps: Sequence[int]  # where the SAEs of setting c are measured along training
    device: str = "cpu"

    @classmethod
    def from_params(cls, params: dict) -> GapExperiment:
        """The experiment from a chapter's checked parameters (other names are ignored)."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})

    def encoders(self) -> dict[str, dict]:
        """The encoder families compared, by name, as ``SAEConfig`` keywords."""
        families = {
            SAE: {},
            MLP_ONE: {"architecture": "mlp", "mlp_hidden": tuple(self.mlp_hidden_one)},
        }
        if self.mlp_hidden_two:
            families[MLP_TWO] = {"architecture": "mlp", "mlp_hidden": tuple(self.mlp_hidden_two)}
        for steps in self.lista_steps:
            families[lista_name(steps)] = {"architecture": "lista", "lista_steps": steps}
        return families

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
    """One seed's split and what it records: result rows (one per setting, method and lam),
    FLOP-curve points and the SAE snapshots of setting c."""

    def __init__(self, exp: GapExperiment, seed: int, split: Sequence):
        self.exp, self.seed, (self.train, self.val, self.test) = exp, seed, split
        self.D = self.train.dictionary
        self.n, self.m = self.D.shape
        self.n_test = len(self.test.x)
        self.rows: list[dict] = []
        self.curves: list[dict] = []
        self.decoders: dict[float, list[tuple]] = {}  # SAE lam -> [(step, flops, W_dec, b_dec)]

    def record(self, setting, method, lam, val_codes, test_codes, dictionary=None, total=None,
               train_lambda=math.nan):  # fmt: skip
        self.rows.append({
            "seed": self.seed, "setting": setting, "method": method, "lambda": lam,
            "train_lambda": train_lambda, "val_mcc": mcc(self.val.codes, val_codes).mcc,
            "mcc": mcc(self.test.codes, test_codes).mcc,
            "mmcs": math.nan if dictionary is None else matched_cosines(self.D, dictionary).mmcs,
            "dead": int(((test_codes > 0).sum(0) == 0).sum()), "flops": total,
        })  # fmt: skip

    def point(self, method, lam, step, total, codes, mmcs, val_loss=math.nan):
        self.curves.append({
            "seed": self.seed, "method": method, "lambda": lam, "step": step, "flops": total,
            "mcc": mcc(self.test.codes, codes).mcc, "mmcs": mmcs, "val_loss": val_loss,
        })  # fmt: skip

    def fista_flops(self, n_iter: int) -> int:
        return self.exp.fista_flops(n_iter, self.n, self.m, self.n_test)

    def encode_flops(self, cfg: SAEConfig) -> int:
        return self.n_test * flops.sae_encode_flops(cfg)


def three_settings(exp: GapExperiment, seed: int, split: Sequence) -> tuple[list, list]:
    """Every method in the three settings on one seed's ``split``: ``(rows, curves)``, those of
    :func:`known_settings` followed by those of :func:`both_unknown`.

    Rows: seed, setting, method, lambda, train_lambda (SAE+ITO's SAE), val_mcc, mcc, mmcs,
    dead, flops; one per setting, method and lambda of ``exp.lambdas`` (one per method in
    setting b). Curves (setting c): seed, method, lambda, step, flops, mcc, mmcs, val_loss
    (the SAE families' validation loss at their lambda); SAE+ITO's curve follows the chosen
    SAE at its chosen inference lambda.
    """
    rows, curves = known_settings(exp, seed, split)
    more_rows, more_curves = both_unknown(exp, seed, split)
    return rows + more_rows, curves + more_curves


def known_settings(exp: GapExperiment, seed: int, split: Sequence) -> tuple[list, list]:
    """Settings a and b, and the oracle (recorded in a and c): ``(rows, [])``."""
    run = _Seed(exp, seed, split)
    for lam in exp.lambdas:  # the oracle: FISTA on the true dictionary
        r_val, r_test = exp.fista(run.D, run.val.x, lam), exp.fista(run.D, run.test.x, lam)
        for setting in (KNOWN_DICTIONARY, BOTH_UNKNOWN):
            total = run.fista_flops(r_test.n_iter)
            run.record(setting, ORACLE, lam, r_val.codes, r_test.codes, run.D, total)
    for name in exp.encoders():
        cfg = exp.sae_config(name, seed, run.n, run.m)
        for lam in exp.lambdas:  # (a) known dictionary: only the encoder learns
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
    return run.rows, run.curves


def both_unknown(exp: GapExperiment, seed: int, split: Sequence) -> tuple[list, list]:
    """Setting c without the oracle: the encoder families trained and measured along
    training, SAE+ITO, sparse coding: ``(rows, curves)``."""
    run = _Seed(exp, seed, split)
    for name in exp.encoders():
        cfg = exp.sae_config(name, seed, run.n, run.m)
        for lam in exp.lambdas:
            _train_and_measure(run, name, cfg, lam)
    for steps in exp.mp_steps:  # no penalty: the knob is the number of pursuit steps
        cfg = SAEConfig(d_in=run.m, d_sae=run.n, seed=seed, architecture="mp", mp_steps=steps)
        _train_and_measure(run, MP_SAE, cfg, 0.0, knob=steps)
    _sae_ito(run)
    for lam in exp.lambdas:  # sparse coding, at each number of rounds
        _sparse_coding(run, lam)
    return run.rows, run.curves


def oracle_lambda(exp: GapExperiment, split: Sequence) -> float:
    """The oracle's lambda (FISTA on the true dictionary) chosen on validation, as
    :func:`choose_lambda` chooses it from :func:`known_settings`' rows."""
    train, val, _ = split
    scores = [mcc(val.codes, exp.fista(train.dictionary, val.x, lam).codes).mcc
              for lam in exp.lambdas]  # fmt: skip
    return exp.lambdas[max(range(len(scores)), key=scores.__getitem__)]


def _fitted_encoder(run: _Seed, cfg: SAEConfig, fit: EncoderFitConfig):
    sae = make_sae(cfg).to(run.exp.device)
    codes = run.train.codes if fit.setting == "known_codes" else None
    fit_encoder(sae, run.train.x, run.D, fit, codes=codes)
    return sae


@torch.no_grad()
def _codes(sae, run: _Seed) -> tuple[Tensor, Tensor]:
    """The SAE's codes of the validation and the test inputs (eval mode)."""
    with inference(sae):
        return sae.encode(run.val.x), sae.encode(run.test.x)


def _train_and_measure(
    run: _Seed, name: str, cfg: SAEConfig, lam: float, knob: float | None = None
) -> None:
    """Setting c for one encoder family and ``lam``: train, measure at the snapshots and at
    the end (test MCC, MMCS, validation loss, FLOPs so far); record the final SAE under
    ``knob`` (default ``lam``) in the lambda column. The SAE's decoders along training are
    kept for SAE+ITO."""
    exp, test = run.exp, run.test
    knob = lam if knob is None else knob
    sae = make_sae(cfg).to(exp.device)
    tcfg = TrainConfig(n_steps=exp.n_steps, lr=exp.lr, sparsity_coeff=lam, lr_decay_steps=0,
                       device=exp.device, progress=False)  # fmt: skip

    def measure(step: int) -> None:
        with inference(sae):
            spent = flops.training_flops(cfg, step, exp.batch_size) + run.encode_flops(cfg)
            mmcs = matched_cosines(run.D, sae.W_dec).mmcs
            val_loss = float(sae.loss(run.val.x, lam).total)
            run.point(name, knob, step, spent, sae.encode(test.x), mmcs, val_loss)
            if name == SAE:
                W, b = sae.W_dec.detach().clone(), sae.b_dec.detach().clone()
                run.decoders.setdefault(lam, []).append((step, spent - run.encode_flops(cfg), W, b))

    batches = TensorBatches(run.train.x, exp.batch_size, seed=run.seed)
    Trainer(sae, tcfg).fit(snapshots(batches, exp.snapshot_steps, measure))
    with torch.no_grad():
        measure(exp.n_steps)
    run.record(BOTH_UNKNOWN, name, knob, *_codes(sae, run), sae.W_dec.detach(),
               run.curves[-1]["flops"])  # fmt: skip


def _sae_ito(run: _Seed) -> None:
    """SAE+ITO on the SAE chosen for the SAE row (its lambda chosen on validation): FISTA on
    its decoder at every inference lambda of the grid (a row each); then, at the inference
    lambda chosen on validation, the same along that SAE's training (the curve)."""
    exp = run.exp
    sae_rows = [r for r in run.rows if r["setting"] == BOTH_UNKNOWN and r["method"] == SAE]
    train_lam = max(sae_rows, key=lambda r: r["val_mcc"])["lambda"]
    *_, (_, spent, W, b) = run.decoders[train_lam]
    mmcs = matched_cosines(run.D, W).mmcs
    val_mcc = {}
    for lam in exp.lambdas:
        val_codes = exp.fista(W, run.val.x, lam, bias=b).codes
        r_test = exp.fista(W, run.test.x, lam, bias=b)
        total = spent + run.fista_flops(r_test.n_iter)
        run.record(BOTH_UNKNOWN, ITO, lam, val_codes, r_test.codes, W, total, train_lam)
        val_mcc[lam] = run.rows[-1]["val_mcc"]
    lam = max(val_mcc, key=val_mcc.get)
    for step, spent, W, b in run.decoders[train_lam]:
        r_test = exp.fista(W, run.test.x, lam, bias=b)
        mmcs = matched_cosines(run.D, W).mmcs
        run.point(ITO, lam, step, spent + run.fista_flops(r_test.n_iter), r_test.codes, mmcs)


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
        run.point(SPARSE_CODING, lam, rounds, total, r_test.codes, mmcs)
    val_codes = exp.fista(sc.dictionary, run.val.x, lam).codes
    run.record(BOTH_UNKNOWN, SPARSE_CODING, lam, val_codes, r_test.codes, sc.dictionary, total)


def choose_lambda(results: pd.DataFrame) -> pd.DataFrame:
    """Each method's row at its best ``lambda`` per seed and setting, by validation MCC (the
    first of the grid on a tie)."""
    best = results.groupby(["seed", "setting", "method"], sort=False)["val_mcc"].idxmax()
    return results.loc[best].reset_index(drop=True)


def summarise(best: pd.DataFrame) -> pd.DataFrame:
    """Per setting and method of the chosen rows: mean test MCC and its 95% t interval over
    seeds, mean MMCS, dead latents and FLOPs, the median chosen lambda."""
    rows = []
    ordered = best.sort_values("setting", kind="stable")  # a, b, c; methods as they come
    for (setting, method), part in ordered.groupby(["setting", "method"], sort=False):
        mean, low, high, n = interval(part["mcc"])
        rows.append({"setting": setting, "method": method, "mcc": mean, "low": low,
                     "high": high, "n": n, "mmcs": part["mmcs"].mean(),
                     "dead": part["dead"].mean(), "flops": part["flops"].mean(),
                     "lambda": part["lambda"].median()})  # fmt: skip
    return pd.DataFrame(rows)


def edge_choices(best: pd.DataFrame, lambdas: Sequence[float]) -> pd.DataFrame:
    """Does the grid bracket each method's optimum? Per setting and method with a lambda: the
    number of seeds, and of seeds whose chosen lambda is the grid's smallest or largest
    (for SAE+ITO, its inference lambda)."""
    low, high = min(lambdas), max(lambdas)
    part = best.dropna(subset=["lambda"]).sort_values("setting", kind="stable")
    return (
        part.groupby(["setting", "method"], sort=False)["lambda"]
        .agg(seeds="size", at_smallest=lambda v: int((v == low).sum()),
             at_largest=lambda v: int((v == high).sum()))
        .reset_index()
    )  # fmt: skip


def flop_curves(curves: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Setting c's curve points at each method's chosen ``lambda`` (per seed)."""
    chosen = best[best["setting"] == BOTH_UNKNOWN][["seed", "method", "lambda"]]
    return curves.merge(chosen, on=["seed", "method", "lambda"])
