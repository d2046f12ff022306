"""The lasso by working sets: small Gram-matrix problems over the atoms that can be active.

The same problem as :mod:`saelib.coding.lasso`, for every sample (``r = x - bias``)::

    min_c  0.5 * ||r - c @ D||_2^2 + l1 * ||c||_1        (subject to c >= 0 if nonneg)

At a solution most atoms are zero, and an atom ``j`` with ``c_j = 0`` is optimal iff its
gradient ``g_j = (c @ D - r) @ d_j`` satisfies ``|g_j| <= l1`` (``g_j >= -l1`` when
``nonneg``). Working-set solvers (Johnson & Guestrin 2015, Blitz; Massias et al. 2018,
celer; Bertrand et al. 2022, skglm) exploit this: solve the problem restricted to a few
atoms, check the optimality of all the others with one gradient, add the worst violators,
repeat. Here every sample of a chunk does this at once:

1. ``g = (c @ D - r) @ D.T`` for all atoms (two dense products, ``4 n_atoms d`` FLOPs per
   sample); the violation of an inactive atom is ``max(0, |g_j| - l1)`` (``max(0, -g_j - l1)``
   when ``nonneg``), of an active one ``|g_j + l1 sign(c_j)|``.
2. A sample whose largest violation is at most ``tol * l1`` has converged. The others get a
   working set of ``W`` atoms: their active atoms, then the largest violators, ``W`` twice
   the largest active count in the chunk (at least ``min_working_set``), as celer and skglm
   grow theirs.
3. On the working set the problem is ``min_z 0.5 z^T G z - q^T z + l1 ||z||_1`` with
   ``G = D_W D_W^T`` (gathered from the full Gram matrix ``D D^T``, formed once per call)
   and ``q = D_W r``: FISTA with adaptive restart on ``[b, W, W]`` batched products, step
   ``1 / lambda_max(G)`` per sample, warm-started from the current codes, until the
   relative change is at most ``inner_tol``.

The full Gram matrix costs ``n_atoms^2`` floats (85 MB at 4,608 atoms in float32, 2.4 GB at
24,576); above ``max_gram_atoms`` atoms each chunk forms its samples' ``G`` from the gathered
atoms instead. ``l1`` must be positive: without a penalty no atom is inactive at the
optimum and :func:`saelib.coding.lasso.fista` is the solver to use.

The result agrees with scikit-learn's ``Lasso(alpha=l1 / d, positive=nonneg)`` on each signal
(``tests/test_working_set.py``). It is not in ``saelib.coding.ito.SOLVERS``: its cost
depends on how many outer passes and inner steps each chunk needs, so it has no fixed FLOP
count for chapter 02's FLOP axis.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saelib.coding.lasso import soft_threshold
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
from saelib.validation import check_int, require

__all__ = ["lasso_working_set"]


def lasso_working_set(
    D: Tensor,
    x: Tensor,
    l1: float,
    *,
    nonneg: bool = False,
    tol: float = 1e-4,
    max_outer: int = 50,
    inner_tol: float = 1e-7,
    max_inner: int = 2000,
    min_working_set: int = 16,
    max_gram_atoms: int = 8192,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    init: Tensor | None = None,
) -> ITOResult:
    """The lasso by batched working sets (the method is in the module docstring).

    Parameters
    ----------
    D : Tensor of shape (n_atoms, d), float32 or float64
    x : Tensor of shape (batch, d), with D's dtype and device
    l1 : float > 0
    nonneg : also constrain ``c >= 0``
    tol : a sample has converged when every atom's optimality violation is at most
        ``tol * l1`` (the violation is in the units of the gradient, as ``l1`` is)
    max_outer : int >= 1, working-set passes per chunk
    inner_tol, max_inner : stopping rule of the FISTA steps on each working set (relative
        change of the sub-problem's codes)
    min_working_set : int >= 1, the smallest working set (then twice the largest support)
    max_gram_atoms : form the full Gram matrix ``D D^T`` up to this many atoms
    bias : Tensor of shape (d,) or None
    chunk_size : int >= 1, samples solved at once
    init : Tensor of shape (batch, n_atoms) or None, the warm start (default zeros)

    Returns
    -------
    ITOResult with ``n_iter`` the most working-set passes over chunks and ``converged``
    per sample (the optimality test of step 2 passed).
    """
    check_problem(D, x, bias, chunk_size)
    check_penalty("l1", l1)
    require(l1 > 0, "l1", l1, "> 0 (for l1 = 0 use saelib.coding.lasso.fista)")
    check_flag("nonneg", nonneg)
    check_penalty("tol", tol)
    check_penalty("inner_tol", inner_tol)
    for name, value in (("max_outer", max_outer), ("max_inner", max_inner),
                        ("min_working_set", min_working_set),
                        ("max_gram_atoms", max_gram_atoms)):  # fmt: skip
        check_int(name, value, 1)
    if init is not None:
        check_tensor("init", init, "[batch, n_atoms]", 2, D)
        shape = (x.shape[0], D.shape[0])
        check_shape("init", init, shape, f"None or of shape [batch, n_atoms] = {list(shape)}")
        if nonneg:
            require(bool((init >= 0).all()), "init", "negative entries", ">= 0 when nonneg")

    r = centre(x, bias)
    gram = D @ D.T if len(D) <= max_gram_atoms else None
    opts = (l1, nonneg, tol, max_outer, inner_tol, max_inner, min_working_set)

    def solve(rows: slice) -> tuple:
        c = None if init is None else init[rows].clone()
        return _solve_chunk(D, gram, r[rows], c, *opts)

    return result(D, bias, chunked(solve, len(x), chunk_size))


def _violation(c: Tensor, grad: Tensor, l1: float, nonneg: bool) -> Tensor:
    """Per atom, how far ``c [b, n]`` is from optimal given the gradient ``grad [b, n]``."""
    active = c != 0
    if nonneg:
        inactive = (-grad - l1).clamp_min(0)
    else:
        inactive = (grad.abs() - l1).clamp_min(0)
    return torch.where(active, (grad + l1 * c.sign()).abs(), inactive)


def _solve_chunk(D, gram, r, c, l1, nonneg, tol, max_outer, inner_tol, max_inner, w_min):
    """Working-set passes on one chunk ``r [b, d]`` from ``c [b, n]`` (zeros when None)."""
    b, n = len(r), len(D)
    c = r.new_zeros(b, n) if c is None else c
    corr = r @ D.T  # [b, n]: q for every atom; the gradient is (c @ D) @ D.T - corr
    converged = torch.zeros(b, dtype=torch.bool, device=r.device)
    n_outer = 0
    while n_outer < max_outer:
        grad = (c @ D) @ D.T - corr
        violation = _violation(c, grad, l1, nonneg)
        converged = violation.amax(dim=1) <= tol * l1
        if converged.all():
            break
        n_outer += 1
        largest = int((c != 0).sum(dim=1).max())
        width = min(n, max(w_min, 2 * largest))
        # Active atoms first (their score is +inf), then the worst violators.
        score = torch.where(c != 0, torch.inf, violation)
        idx = score.topk(width, dim=1).indices  # [b, W]
        if gram is not None:
            sub = gram[idx.unsqueeze(2), idx.unsqueeze(1)]  # [b, W, W]
        else:
            atoms = D[idx]  # [b, W, d]
            sub = atoms @ atoms.transpose(1, 2)
        z = _fista_gram(sub, corr.gather(1, idx), c.gather(1, idx), l1, nonneg,
                        inner_tol, max_inner)  # fmt: skip
        c = torch.zeros_like(c).scatter_(1, idx, z)
    return c, n_outer, converged, None, None


def _fista_gram(G, q, z, l1, nonneg, tol, max_iter):
    """FISTA with adaptive restart on ``min 0.5 z^T G z - q^T z + l1 ||z||_1`` per sample.

    ``G [b, W, W]``, ``q [b, W]``, warm start ``z [b, W]``; returns ``z``.
    """
    # The largest eigenvalue in float64: the step must not exceed 1 / L.
    lipschitz = torch.linalg.eigvalsh(G.double())[:, -1:].to(G.dtype)  # [b, 1]
    step = 1.0 / lipschitz.clamp_min(torch.finfo(G.dtype).tiny)
    y, t = z, torch.ones_like(step)
    for _ in range(max_iter):
        grad = torch.bmm(G, y.unsqueeze(2)).squeeze(2) - q
        z_new = soft_threshold(y - step * grad, step * l1, nonneg)
        diff = z_new - z
        # Restart the momentum of a sample whose last step went against it (O'Donoghue & Candes).
        t = torch.where(((y - z_new) * diff).sum(1, keepdim=True) > 0, 1.0, t)
        t_next = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        y = z_new + ((t - 1) / t_next) * diff
        t, z = t_next, z_new
        if bool((diff.norm(dim=1) <= tol * z.norm(dim=1)).all()):
            break
    return z
