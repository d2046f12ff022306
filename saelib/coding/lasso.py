"""The lasso by proximal gradient: ISTA and FISTA, and the lasso objective.

For every sample independently (``r = x - bias``) both solve::

    min_c  0.5 * ||r - c @ D||_2^2 + l1 * ||c||_1        (subject to c >= 0 if nonneg)

by proximal gradient steps of size ``1 / L``, ``L = ||D||_2^2`` (the largest eigenvalue of
``D D^T``, computed once per call), each followed by soft-thresholding at ``l1 / L``
(``max(0, v - l1 / L)`` when ``nonneg``). scikit-learn's ``Lasso`` minimises
``(1 / (2 n_samples)) ||y - X w||^2 + alpha ||w||_1``; for one signal ``X = D.T``, ``y = r``
and ``n_samples = d``, so it solves this problem at ``alpha = l1 / d``.

Each iteration costs about ``4 n_atoms d`` FLOPs per sample (two products with ``D``); ``L``
costs one symmetric eigendecomposition of the smaller Gram matrix per call
(``saelib.coding.cost``). A sample stops when its relative change ``||c_k - c_{k-1}|| <= tol *
||c_k||`` (a zero step counts as converged); the chunk stops when all of its samples have, or
after ``max_iter`` iterations. ``ITOResult.converged`` is per sample and ``n_iter`` the most
iterations run over chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saelib.coding.problem import (
    ITOResult,
    centre,
    check_flag,
    check_penalty,
    check_problem,
    check_shape,
    check_tensor,
    chunked,
    result,
)
from saelib.validation import check_int

__all__ = ["LASSO_SOLVERS", "fista", "ista", "lasso_objective", "soft_threshold"]


def lasso_objective(D: Tensor, x: Tensor, codes: Tensor, l1: float, *, bias=None) -> Tensor:
    """Per-sample lasso objective ``0.5 ||x - bias - codes @ D||^2 + l1 ||codes||_1``.

    ``D [n_atoms, d]``, ``x [batch, d]``, ``codes [batch, n_atoms]``, ``bias [d]`` or None;
    returns ``[batch]``.
    """
    check_problem(D, x, bias, 1)
    check_tensor("codes", codes, "[batch, n_atoms]", 2, D)
    shape = (x.shape[0], D.shape[0])
    check_shape("codes", codes, shape, f"of shape [batch, n_atoms] = {list(shape)}")
    check_penalty("l1", l1)
    return _objective(D, centre(x, bias), codes, l1)


def ista(D: Tensor, x: Tensor, l1: float, **options) -> ITOResult:
    """ISTA, iterative shrinkage-thresholding (Daubechies, Defrise & De Mol 2004): O(1/k).

    The problem, the step and the stopping rule are in the module docstring.

    Parameters
    ----------
    D : Tensor of shape (n_atoms, d), float32 or float64
    x : Tensor of shape (batch, d), with D's dtype and device
    l1 : float >= 0
    options : keywords, with their defaults:
        ``nonneg=False``; ``max_iter=500`` (int >= 1); ``tol=1e-6`` (float >= 0);
        ``bias=None`` (Tensor of shape (d,)); ``chunk_size=4096`` (int >= 1, rows solved at
        once); ``init=None`` (Tensor of shape (batch, n_atoms), the warm start, default
        zeros); ``return_history=False`` (record the objective of every iterate in
        ``ITOResult.history``).
    """
    args = _lasso_args(l1, **options)
    _check_lasso(D, x, *args)
    return _lasso_impl(D, x, *args, momentum=False, restart=False)


def fista(D: Tensor, x: Tensor, l1: float, *, restart: bool = True, **options) -> ITOResult:
    """FISTA: ISTA with Nesterov momentum (Beck & Teboulle 2009, SIAM J. Imaging Sci.): O(1/k^2).

    Takes :func:`ista`'s arguments (``options``, with the same defaults) and ``restart``.
    With ``restart`` (default), a sample's momentum is reset whenever it points against the
    last step, ``<y_{k-1} - c_k, c_k - c_{k-1}> > 0`` (the gradient scheme of O'Donoghue &
    Candes 2015, "Adaptive restart for accelerated gradient schemes"): one dot product per
    iteration, and linear convergence once the support settles.
    """
    args = _lasso_args(l1, **options)
    _check_lasso(D, x, *args)
    check_flag("restart", restart)
    return _lasso_impl(D, x, *args, momentum=True, restart=restart)


def _lasso_args(
    l1: float,
    *,
    nonneg: bool = False,
    max_iter: int = 500,
    tol: float = 1e-6,
    bias: Tensor | None = None,
    chunk_size: int = 4096,
    init: Tensor | None = None,
    return_history: bool = False,
) -> tuple:
    """The lasso solvers' keyword arguments with their defaults, as the tuple passed on."""
    return l1, nonneg, max_iter, tol, bias, chunk_size, init, return_history


def _check_lasso(D, x, l1, nonneg, max_iter, tol, bias, chunk_size, init, history) -> None:
    check_problem(D, x, bias, chunk_size)
    check_penalty("l1", l1)
    check_flag("nonneg", nonneg)
    check_int("max_iter", max_iter, 1)
    check_penalty("tol", tol)
    check_flag("return_history", history)
    if init is not None:
        check_tensor("init", init, "[batch, n_atoms]", 2, D)
        shape = (x.shape[0], D.shape[0])
        check_shape("init", init, shape, f"None or of shape [batch, n_atoms] = {list(shape)}")


def _objective(D: Tensor, x: Tensor, codes: Tensor, l1: float) -> Tensor:
    return 0.5 * (x - codes @ D).pow(2).sum(1) + l1 * codes.abs().sum(1)


def _lipschitz(D: Tensor) -> float:
    """``||D||_2^2``, the largest eigenvalue of ``D D^T``, from the smaller Gram matrix."""
    gram = D.T @ D if D.shape[1] <= D.shape[0] else D @ D.T
    return torch.linalg.eigvalsh(gram)[-1].item()


def _lasso_impl(
    D, x, l1, nonneg, max_iter, tol, bias, chunk_size, init, history, momentum, restart
) -> ITOResult:
    step = 1.0 / max(_lipschitz(D), torch.finfo(D.dtype).tiny)
    r = centre(x, bias)

    def solve(rows: slice) -> tuple:
        r_rows = r[rows]  # [b, d]
        c = r_rows.new_zeros(len(r_rows), len(D)) if init is None else init[rows].clone()
        opts = (l1, step, nonneg, max_iter, tol, momentum, restart, history)
        return _proximal_gradient(D, r_rows, c, *opts)

    return result(D, bias, chunked(solve, len(x), chunk_size))


def soft_threshold(v: Tensor, threshold: float | Tensor, nonneg: bool) -> Tensor:
    """Proximal map of ``threshold * ||.||_1`` (plus the indicator of ``c >= 0``); a tensor
    ``threshold`` broadcasts against ``v`` (per-sample thresholds)."""
    if nonneg:
        return (v - threshold).clamp_min(0)
    return v.sign() * (v.abs() - threshold).clamp_min(0)


def _proximal_gradient(D, r, c, l1, step, nonneg, max_iter, tol, momentum, restart, history):
    """ISTA (``momentum=False``) or FISTA from ``c [b, n_atoms]`` on ``r [b, d]``."""
    y = c  # the point where the gradient is taken: c (ISTA) or the extrapolation (FISTA)
    t = torch.ones(len(r), 1, dtype=r.dtype, device=r.device)  # FISTA's t_k per sample
    hist = [_objective(D, r, c, l1)] if history else None
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        grad = (y @ D - r) @ D.T  # [b, n_atoms], gradient of 0.5 ||r - y @ D||^2
        c_new = soft_threshold(y - step * grad, step * l1, nonneg)
        diff = c_new - c
        converged = diff.norm(dim=1) <= tol * c_new.norm(dim=1)
        if momentum:
            if restart:
                t = torch.where(((y - c_new) * diff).sum(1, keepdim=True) > 0, 1.0, t)
            t_next = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
            y = c_new + ((t - 1) / t_next) * diff
            t = t_next
        else:
            y = c_new
        c = c_new
        if history:
            hist.append(_objective(D, r, c, l1))
        if converged.all():
            break
    return c, n_iter, converged, None, torch.stack(hist) if history else None


LASSO_SOLVERS = {"ista": ista, "fista": fista}
"""The lasso solvers by name: they take ``l1`` and ``max_iter``, and cost per iteration."""
