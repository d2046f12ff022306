"""Greedy pursuits with a fixed number of atoms: OMP, gradient pursuit, matching pursuit.

Each solver takes ``l0`` steps; a step picks the atom with the largest ``|<r, d_i>| / ||d_i||``
(the largest ``<r, d_i> / ||d_i||`` when ``nonneg``) for the residual ``r`` and updates the
codes. Atoms are normalised for the selection only. scikit-learn's OMP uses the raw
``|<r, d_i>|`` and assumes unit-norm atoms; with unit-norm atoms the two agree. Zero atoms
score 0 and never get a coefficient. ``ITOResult.n_iter`` is ``l0`` and ``support [batch, l0]``
holds the atoms in the order chosen. Besides ``D`` and the chunk's ``O(chunk_size * n_atoms)``
correlations, the rows of the chosen atoms take ``O(chunk_size * l0 * d)``.

Common arguments: ``D [n_atoms, d]`` float32 or float64, any norms; ``x [batch, d]`` with D's
dtype and device; ``l0`` atoms per sample; ``bias [d]`` or None (``x - bias`` is coded);
``chunk_size`` rows solved at once; ``return_history`` records ``||x - x_hat||`` after every
step in ``ITOResult.history``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from saelib.coding.problem import (
    ITOResult,
    centre,
    check_flag,
    check_problem,
    chunked,
    result,
    safe_div,
)
from saelib.validation import check_int

__all__ = ["PURSUIT_SOLVERS", "gradient_pursuit", "matching_pursuit", "omp"]


def omp(
    D: Tensor,
    x: Tensor,
    l0: int,
    *,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    return_history: bool = False,
) -> ITOResult:
    """Orthogonal matching pursuit (Pati, Rezaiifar & Krishnaprasad 1993), fixed L0.

    Each of ``l0`` steps (an int in ``[1, min(n_atoms, d)]``) adds to the support ``S`` the
    unused atom of largest ``|<r, d_i>| / ||d_i||`` and refits all coefficients on ``S`` by
    exact least squares, ``c_S = argmin ||x - bias - c_S @ D_S||^2``, i.e. ``(D_S D_S^T) c_S =
    D_S (x - bias)``, through a Cholesky factor of the Gram matrix grown by one row per step
    (as scikit-learn's ``orthogonal_mp``), batched over samples. Chosen atoms are excluded
    from later steps (the residual is orthogonal to them anyway). Per sample, step ``s``
    costs about ``2 n_atoms d`` (correlations) ``+ 4 s d + 3 s^2`` FLOPs.

    Exactly ``l0`` non-zeros on generic problems. Fewer when the residual is already zero to
    rounding (``||r|| <= 100 eps ||x - bias||``: ``x`` lies in the span of fewer atoms) or
    when the chosen atom is linearly dependent on the support: that atom is kept in
    ``support`` with coefficient 0 (scikit-learn stops with a warning instead).
    """
    _check_pursuit(D, x, l0, bias, chunk_size, lambda n_atoms, d: min(n_atoms, d))
    check_flag("return_history", return_history)
    return _pursuit_impl(_omp_chunk, D, x, l0, False, bias, chunk_size, return_history)


def gradient_pursuit(D: Tensor, x: Tensor, l0: int, *, nonneg: bool = True, **options) -> ITOResult:
    """Gradient pursuit (Blumensath & Davies 2008, "Gradient pursuits", IEEE TSP), fixed L0.

    ``l0`` is an int in ``[1, n_atoms]``; ``options`` are :func:`omp`'s (``bias``,
    ``chunk_size``, ``return_history``). The ITO solver of the Google DeepMind mech-interp
    team (progress update, 2024). Each of ``l0`` steps adds the unused atom of largest
    correlation with the residual to the support ``S`` (largest positive one if ``nonneg``),
    then takes one gradient step on ``S`` with the exact line-search step: ``g_S = D_S r``,
    ``c_S += (||g_S||^2 / ||g_S @ D_S||^2) g_S``. So the support has exactly ``l0`` atoms; when
    ``nonneg`` a coefficient can end at 0. (In the DeepMind code the support is the non-zero
    codes plus the new atom, and the argmax may re-pick an atom in use, so fewer than ``l0``
    atoms can result.) Unlike the selection, the step depends on the atom norms: results are
    not invariant to rescaling atoms.

    Non-negativity: coefficients at 0 whose gradient points below 0 are left out of the step,
    and the step is clamped at 0 as in the DeepMind update. Clamping alone can increase the
    residual, so when it bites the move from the old to the clamped codes is shortened by an
    exact line search on that segment (it is a descent direction, being a projected-gradient
    step): ``||x - x_hat||`` never increases, and the codes stay >= 0. Per sample, step ``s``
    costs about ``2 n_atoms d + 4 s d`` FLOPs (``+ 2 s d`` when the clamp bites).
    """
    bias, chunk_size, history = _options(**options)
    _check_pursuit(D, x, l0, bias, chunk_size, lambda n_atoms, d: n_atoms)
    check_flag("nonneg", nonneg)
    check_flag("return_history", history)
    return _pursuit_impl(_gp_chunk, D, x, l0, nonneg, bias, chunk_size, history)


def matching_pursuit(
    D: Tensor, x: Tensor, l0: int, *, nonneg: bool = False, **options
) -> ITOResult:
    """Matching pursuit (Mallat & Zhang 1993), ``l0`` steps (any int >= 1).

    ``options`` are :func:`omp`'s (``bias``, ``chunk_size``, ``return_history``). Each step
    picks the atom ``i`` of largest ``|<r, d_i>| / ||d_i||`` (largest positive if ``nonneg``;
    no step when none is positive) and adds ``<r, d_i> / ||d_i||^2`` to ``c_i``: no refit, so
    it is cheap and biased. What it guarantees: ``l0`` steps (fewer with ``nonneg`` when
    no atom correlates positively), hence at most ``l0`` non-zeros, and a residual norm
    that never grows. Not ``l0`` distinct atoms: an atom can be picked again (at
    ``l0 = 8``, 6 to 8 non-zeros on a random 64-atom dictionary in 16 dimensions), and
    ``support`` then repeats it. For exactly ``l0`` distinct atoms use :func:`omp`.
    """
    bias, chunk_size, history = _options(**options)
    _check_pursuit(D, x, l0, bias, chunk_size, None)
    check_flag("nonneg", nonneg)
    check_flag("return_history", history)
    return _pursuit_impl(_mp_chunk, D, x, l0, nonneg, bias, chunk_size, history)


def _options(
    *, bias: Tensor | None = None, chunk_size: int = 1024, return_history: bool = False
) -> tuple:
    """:func:`omp`'s keyword arguments with its defaults."""
    return bias, chunk_size, return_history


def _check_pursuit(D, x, l0, bias, chunk_size, max_l0: Callable | None) -> None:
    """The common arguments, then ``l0`` in ``[1, max_l0(n_atoms, d)]`` (no cap if None)."""
    check_problem(D, x, bias, chunk_size)
    check_int("l0", l0, 1, None if max_l0 is None else max_l0(*D.shape))


def _select(corr: Tensor, inv_norm: Tensor, taken: Tensor | None, nonneg: bool) -> Tensor:
    """Atom ``[b]`` of largest correlation per unit norm, ``<r, d_i> / ||d_i||`` (its absolute
    value unless ``nonneg``), among atoms not ``taken [b, n_atoms]``; zero atoms score 0."""
    score = corr * inv_norm
    if not nonneg:
        score.abs_()
    if taken is not None:
        score.masked_fill_(taken, -math.inf)
    return score.argmax(1)


def _inv_norms(D: Tensor) -> Tensor:
    norms = D.norm(dim=1)
    return torch.where(norms > 0, 1 / norms.clamp_min(torch.finfo(D.dtype).tiny), 0.0)


def _pursuit_impl(chunk_fn, D, x, l0, nonneg, bias, chunk_size, history) -> ITOResult:
    r, inv_norm = centre(x, bias), _inv_norms(D)

    def solve(rows: slice) -> tuple:
        codes, support, hist = chunk_fn(D, inv_norm, r[rows], l0, nonneg, history)
        done = torch.ones(len(codes), dtype=torch.bool, device=codes.device)
        return codes, l0, done, support, torch.stack(hist) if history else None

    return result(D, bias, chunked(solve, len(x), chunk_size))


class _Support:
    """The atoms chosen so far for each sample of a chunk: their indices ``idx [b, l0]``,
    rows ``atoms [b, l0, d]`` and a mask ``taken [b, n_atoms]``. With the rows at hand, a
    step costs one dense product (the correlations), the rest is ``O(b * l0 * d)``."""

    def __init__(self, D: Tensor, b: int, l0: int):
        self.D, self.rows = D, torch.arange(b, device=D.device)
        self.idx = torch.zeros(b, l0, dtype=torch.long, device=D.device)
        self.atoms = torch.zeros(b, l0, D.shape[1], dtype=D.dtype, device=D.device)
        self.taken = torch.zeros(b, D.shape[0], dtype=torch.bool, device=D.device)

    def add(self, s: int, j: Tensor) -> Tensor:
        """Make atom ``j [b]`` the ``s``-th of the support; return its rows ``[b, d]``."""
        self.idx[:, s], self.atoms[:, s] = j, self.D[j]
        self.taken[self.rows, j] = True
        return self.atoms[:, s]

    def decode(self, coef: Tensor) -> Tensor:
        """``sum_i coef_i d_i`` over the first ``coef.shape[1]`` atoms: ``[b, d]``."""
        return torch.bmm(coef[:, None, :], self.atoms[:, : coef.shape[1]])[:, 0]

    def scatter(self, coef: Tensor) -> Tensor:
        """Dense codes ``[b, n_atoms]`` from coefficients ``[b, l0]`` in support order."""
        codes = coef.new_zeros(len(coef), self.D.shape[0])
        return codes.scatter_add_(1, self.idx, coef)


def _omp_chunk(D, inv_norm, x, l0, nonneg, history):
    b, eps = x.shape[0], torch.finfo(x.dtype).eps
    S = _Support(D, b, l0)
    chol = x.new_zeros(b, l0, l0)  # lower Cholesky factor of the Gram matrix on S
    rhs = x.new_zeros(b, l0)  # <x, d_i> for i in S; 0 for inactive slots
    live = torch.zeros(b, l0, dtype=torch.bool, device=x.device)  # slots with a coefficient
    r, c, x_norm = x, x.new_zeros(b, 0), x.norm(dim=1)
    hist = [x_norm] if history else None
    for s in range(l0):
        j = _select(r @ D.T, inv_norm, S.taken, nonneg=False)  # [b]
        d_j = S.add(s, j)  # [b, d]
        g = torch.bmm(S.atoms[:, :s], d_j[:, :, None])  # [b, s, 1]: <d_i, d_j>, i in S
        g = g * live[:, :s, None]  # inactive slots are decoupled (identity rows of the factor)
        if s:  # new row of the factor: solve chol_S w = <d_i, d_j>
            g = torch.linalg.solve_triangular(chol[:, :s, :s], g, upper=False)
        w = g[..., 0]  # [b, s]
        d2 = d_j.pow(2).sum(1)
        pivot2 = d2 - w.pow(2).sum(1)  # squared new diagonal entry of the factor
        # Inactive: d_j is (numerically) in span(S), or nothing is left to explain.
        active = (pivot2 > 100 * eps * d2) & (r.norm(dim=1) > 100 * eps * x_norm)
        live[:, s] = active
        chol[:, s, :s] = torch.where(active[:, None], w, 0.0)
        chol[:, s, s] = torch.where(active, pivot2.clamp_min(0).sqrt(), 1.0)
        rhs[:, s] = torch.where(active, (x * d_j).sum(1), 0.0)
        c = torch.cholesky_solve(rhs[:, : s + 1, None], chol[:, : s + 1, : s + 1])[..., 0]
        r = x - S.decode(c)
        if history:
            hist.append(r.norm(dim=1))
    return S.scatter(c), S.idx, hist


def _start(D: Tensor, x: Tensor, l0: int, history: bool) -> tuple:
    """An empty support, zero coefficients ``[b, l0]``, the residual ``x`` and its history."""
    r = x.clone()
    return _Support(D, len(x), l0), x.new_zeros(len(x), l0), r, [r.norm(dim=1)] if history else None


def _gp_chunk(D, inv_norm, x, l0, nonneg, history):
    S, c, r, hist = _start(D, x, l0, history)  # c: coefficients in support order
    for s in range(l0):
        corr = r @ D.T  # [b, n_atoms]: minus the gradient of 0.5 ||r||^2
        S.add(s, _select(corr, inv_norm, S.taken, nonneg))
        cs = c[:, : s + 1]
        g = corr.gather(1, S.idx[:, : s + 1])  # [b, s + 1]: descent direction on S
        if nonneg:  # coefficients at 0 that would go negative stay put
            g = g.masked_fill((cs <= 0) & (g < 0), 0.0)
        gD = S.decode(g)  # [b, d]
        step = safe_div(g.pow(2).sum(1), gD.pow(2).sum(1))[:, None]  # exact line search
        new = cs + step * g
        if nonneg and bool((new < 0).any()):
            delta = new.clamp_min(0) - cs  # a feasible descent direction
            dD = S.decode(delta)
            alpha = safe_div((dD * r).sum(1), dD.pow(2).sum(1)).clamp(0, 1)[:, None]
            c[:, : s + 1], r = cs + alpha * delta, r - alpha * dD
        else:
            c[:, : s + 1], r = new, r - step * gD
        if history:
            hist.append(r.norm(dim=1))
    return S.scatter(c), S.idx, hist


def _mp_chunk(D, inv_norm, x, l0, nonneg, history):
    S, c, r, hist = _start(D, x, l0, history)  # c: the increment of each step (atoms can recur)
    for s in range(l0):
        corr = r @ D.T  # [b, n_atoms]
        j = _select(corr, inv_norm, None, nonneg)
        d_j = S.add(s, j)
        coef = corr[S.rows, j] * inv_norm[j].pow(2)  # <r, d_j> / ||d_j||^2
        c[:, s] = coef.clamp_min(0) if nonneg else coef
        r = r - c[:, s, None] * d_j
        if history:
            hist.append(r.norm(dim=1))
    return S.scatter(c), S.idx, hist


PURSUIT_SOLVERS = {
    "omp": omp,
    "gradient_pursuit": gradient_pursuit,
    "matching_pursuit": matching_pursuit,
}
"""The greedy solvers by name: they take ``l0``, the number of steps."""
