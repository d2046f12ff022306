"""The best SAE with a fixed dictionary, to ask of a trained SAE: objective or optimisation?

If an SAE whose decoder *is* the true dictionary (with the best encoder for it) reaches a
lower objective than the SAE the optimiser found, the objective prefers the true features
and the optimiser missed them. If its objective is higher, the objective itself prefers
what was found (Till's question on Anders et al. 2024, "Sparse autoencoders find composed
features in small toy models"). The references are solved, not trained: ``best_encoder``
(L-BFGS in float64 on the encoder with the decoder fixed), certified by
``sparse_coding_bound`` (no SAE with that decoder can score lower).

    ref = reference(SAEConfig(d_in=8, d_sae=4), D, x_train, x_test, lam)
    ref.objective, ref.bound, ref.gap   vs   objective(found, x_test, lam)["total"]
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from saelib.coding.amortisation import set_dictionary_
from saelib.coding.lasso import fista
from saelib.saes import SAE, SAEConfig, make_sae, module_mode


@torch.no_grad()
def objective(sae: SAE, x: Tensor, sparsity_coeff: float, batch_size: int = 8192) -> dict:
    """The training objective of ``sae`` on all of ``x [n, d_in]``, in training mode.

    Returns floats ``mse``, ``sparsity`` (before the coefficient) and ``total`` =
    ``mse + sparsity_coeff * sparsity`` plus any architecture term (Gated's auxiliary loss),
    each the mean over the rows of ``x`` (chunked, weighted by chunk size). Training mode, so
    BatchTopK is scored as trained (per-batch top-k), not with its inference threshold.
    """
    device = next(sae.parameters()).device
    sums: dict[str, float] = {}
    with module_mode(sae, True):
        for chunk in x.split(batch_size):
            total, terms, _ = sae.loss(chunk.to(device), sparsity_coeff)
            for name, value in {"total": total, **terms}.items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(chunk)
    return {name: value / len(x) for name, value in sums.items()}


def sae_with_dictionary(cfg: SAEConfig, dictionary: Tensor) -> SAE:
    """An SAE built from ``cfg`` whose decoder rows are ``dictionary [d_sae, d_in]`` (unit rows),
    encoder the decoder's transpose (linear encoders), biases zero."""
    sae = make_sae(cfg)
    set_dictionary_(sae, dictionary / dictionary.norm(dim=1, keepdim=True).clamp_min(1e-12))
    sae.init_encoder_from_decoder_()  # a no-op where the encoder is not the decoder's shape
    return sae


# -- exact references: the fixed-decoder problem solved to convergence ----------------------
class Reference(NamedTuple):
    """The best ReLU SAE with a fixed decoder, and how close to optimal it is provably."""

    sae: SAE
    """The SAE with the best encoder found (float32; decoder = the dictionary)."""
    objective: float
    """Its objective (``mse + lambda * sparsity``) on the evaluation samples."""
    bound: float
    """A lower bound on the objective of *any* SAE with this decoder on the same samples:
    the sparse-coding optimum (:func:`sparse_coding_bound`)."""
    train_objective: float
    """Its objective on the training samples, where the encoder was fitted."""
    grad_norm: float
    """The largest |gradient| of the training objective at the end (0 at a stationary point)."""

    @property
    def gap(self) -> float:
        """``(objective - bound) / objective``: how far the encoder may be from optimal."""
        return (self.objective - self.bound) / self.objective


def best_encoder(
    cfg: SAEConfig,
    dictionary: Tensor,
    x: Tensor,
    sparsity_coeff: float,
    *,
    max_iter: int = 500,
) -> tuple[SAE, float, float]:
    """The encoder (``W_enc``, ``b_enc``) and ``b_dec`` minimising the ReLU SAE objective on
    ``x [n, d_in]`` with the decoder fixed to ``dictionary [d_sae, d_in]`` (unit rows).

    Full-batch L-BFGS with a strong-Wolfe line search in float64, from two starts (encoder =
    decoder transpose with ``b_enc = 0``, and with ``b_enc = -lambda / 2``, the soft
    threshold that is exactly optimal for an orthonormal dictionary and its negatives); the
    better end point is kept. Returns ``(sae, objective on x, max |gradient|)``; the SAE is
    float32. The problem is not convex (the ReLU), so this is an upper bound on the best
    encoder: compare it with :func:`sparse_coding_bound`.
    """
    if cfg.architecture != "relu" or cfg.tied:
        raise ValueError(
            f"best_encoder solves the untied ReLU SAE's encoder problem, got architecture="
            f"{cfg.architecture!r}, tied={cfg.tied}"
        )
    x64 = x.double()
    best = None
    for b_enc in (0.0, -sparsity_coeff / 2):
        sae = sae_with_dictionary(cfg, dictionary).double()
        with torch.no_grad():
            sae.b_enc.fill_(b_enc)
        free = [sae.W_enc, sae.b_enc, sae.b_dec]
        sae.W_dec.requires_grad_(False)
        opt = torch.optim.LBFGS(free, lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                                tolerance_change=1e-12, history_size=20,
                                line_search_fn="strong_wolfe")  # fmt: skip

        def closure(sae=sae, opt=opt):
            opt.zero_grad()
            total = sae.loss(x64, sparsity_coeff).total
            total.backward()
            return total

        opt.step(closure)
        total = float(closure().detach())
        grad = max(float(p.grad.abs().max()) for p in free)
        if best is None or total < best[1]:
            best = (sae, total, grad)
    sae, total, grad = best
    sae.W_dec.requires_grad_(True)
    return sae.float(), total, grad


def sparse_coding_bound(dictionary: Tensor, x: Tensor, sparsity_coeff: float) -> float:
    """A lower bound on the objective of any SAE with decoder ``dictionary`` on ``x [n, d_in]``.

    Every SAE's codes are one choice of non-negative codes, so none scores below
    ``min_{b, c_i >= 0} mean_i (||x_i - b - c_i D||^2 + lambda sum_k c_ik)`` (``D``'s rows at
    unit norm, the decoder bias ``b`` free). That problem is convex; with ``mu = lambda / 2``
    its dual (per sample, up to the factor 2 of the SAE's scale) is
    ``max sum_i <t_i, x_i> - ||t_i||^2 / 2`` subject to ``<d_k, t_i> <= mu`` and
    ``sum_i t_i = 0``. So the value returned is the dual value of a feasible point, a bound
    that holds however inexact the solve: the residuals ``r_i`` of near-optimal codes
    (``b`` found by L-BFGS on the convex ``g(b) = min_c ...``, whose gradient is
    ``-2 mean_i r_i``; each evaluation a non-negative FISTA solve in float64), re-centred
    to sum to zero and scaled into the constraints.
    """
    D = (dictionary / dictionary.norm(dim=1, keepdim=True)).double()
    x64 = x.double()
    mu = sparsity_coeff / 2  # the SAE objective is twice the lasso's 0.5 ||r||^2 + mu ||c||_1
    b = x64.mean(0).clone().requires_grad_(True)
    state = {"codes": None}

    def closure():
        with torch.no_grad():
            codes = fista(D, x64, mu, nonneg=True, bias=b.detach(), init=state["codes"],
                          max_iter=300, tol=1e-9).codes  # fmt: skip
            state["codes"] = codes
            r = x64 - b - codes @ D
            b.grad = -2 * r.mean(0)
            return (r.pow(2).sum(1).mean() + sparsity_coeff * codes.sum(1).mean()).item()

    opt = torch.optim.LBFGS([b], lr=1.0, max_iter=50, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")  # fmt: skip
    opt.step(closure)
    with torch.no_grad():
        r = x64 - state["codes"] @ D
        r -= r.mean(0)  # sum_i t_i = 0: the residuals at the exact b for these codes
        worst = float((r @ D.T).max())
        t = r * min(1.0, mu / worst) if worst > 0 else r
        return float(2 * ((t * x64).sum(1) - 0.5 * t.pow(2).sum(1)).mean())


def reference(
    cfg: SAEConfig, dictionary: Tensor, x_train: Tensor, x_eval: Tensor, sparsity_coeff: float
) -> Reference:
    """:func:`best_encoder` fitted on ``x_train``, scored on ``x_eval`` beside the bound there."""
    sae, train_total, grad = best_encoder(cfg, dictionary, x_train, sparsity_coeff)
    total = objective(sae.double(), x_eval.double(), sparsity_coeff)["total"]
    bound = sparse_coding_bound(dictionary, x_eval, sparsity_coeff)
    return Reference(sae.float(), total, bound, train_total, grad)
