"""Inference-time optimisation (ITO): sparse codes for signals on a fixed dictionary.

Given a dictionary ``D [n_atoms, d]`` (atoms as rows, the layout of ``SAE.W_dec``; any norms),
an optional ``bias [d]`` and signals ``x [batch, d]``, every solver returns codes
``c [batch, n_atoms]`` with the reconstruction ``x_hat = c @ D + bias``:

- :func:`ista`, :func:`fista`: the lasso, per sample
  ``min_c 0.5 ||x - bias - c @ D||^2 + l1 ||c||_1`` (optionally ``c >= 0``);
- :func:`omp`, :func:`gradient_pursuit`, :func:`matching_pursuit`: greedy, ``l0`` atoms;
- :func:`sae_ito` ("SAE+ITO"): one of them on a trained SAE's decoder and decoder bias.

The greedy solvers pick the atom with the largest ``|<r, d_i>| / ||d_i||`` (the largest
``<r, d_i> / ||d_i||`` when ``nonneg``) for the residual ``r``: atoms are normalised for the
selection only. scikit-learn's OMP uses the raw ``|<r, d_i>|`` and assumes unit-norm atoms;
with unit-norm atoms the two agree. Zero atoms score 0 and never get a coefficient.

Every public function validates its arguments (``ValueError`` naming the parameter) and calls
an unchecked ``_impl``. The batch is solved in chunks of ``chunk_size`` rows, so the working
memory is ``O(chunk_size * n_atoms)`` besides ``D``, plus ``O(chunk_size * l0 * d)`` for the
rows of the chosen atoms in the pursuits. One code path for CPU and CUDA, float32 and
float64; results live on ``x``'s device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "ITOResult",
    "SOLVERS",
    "fista",
    "gradient_pursuit",
    "ista",
    "lasso_objective",
    "matching_pursuit",
    "omp",
    "sae_ito",
]


class ITOResult(NamedTuple):
    """What every solver returns."""

    codes: Tensor  # [batch, n_atoms]
    x_hat: Tensor  # [batch, d]: codes @ D + bias
    n_iter: int  # iterations run: the largest over chunks (ISTA/FISTA), l0 (pursuits)
    converged: Tensor  # [batch] bool: stopping rule met (ISTA/FISTA); all True (pursuits)
    support: Tensor | None = None  # [batch, l0] long: atoms in the order selected (pursuits)
    history: Tensor | None = None  # [n_iter + 1, batch] with return_history=True: lasso
    # objective (ISTA/FISTA) or residual norm ||x - x_hat|| (pursuits), from the start


# ---------------------------------------------------------------- validation


def _fail(name: str, allowed: str, value: object) -> None:
    shown = f"shape {list(value.shape)}" if isinstance(value, Tensor) else repr(value)
    raise ValueError(f"{name} must be {allowed}, got {shown}")


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo
    if not ok or (hi is not None and value > hi):
        _fail(name, f"an int in [{lo}, {hi}]" if hi is not None else f"an int >= {lo}", value)


def _check_real(name: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        _fail(name, "a finite number >= 0", value)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        _fail(name, "True or False", value)


def _check_tensor(name: str, t: object, shape: str, ndim: int, like: Tensor | None) -> None:
    if not isinstance(t, Tensor) or t.ndim != ndim:
        _fail(name, f"a {ndim}-D tensor of shape {shape}", t)
    if t.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64, got {t.dtype}")
    if like is not None and (t.dtype != like.dtype or t.device != like.device):
        raise ValueError(
            f"{name} must have D's dtype and device ({like.dtype}, {like.device}), "
            f"got ({t.dtype}, {t.device})"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")


def _check_problem(D: Tensor, x: Tensor, bias: Tensor | None, chunk_size: int) -> None:
    _check_tensor("D", D, "[n_atoms, d]", 2, None)
    if D.numel() == 0:
        _fail("D", "non-empty, n_atoms >= 1 and d >= 1", D)
    _check_tensor("x", x, "[batch, d]", 2, D)
    if x.shape[1] != D.shape[1]:
        _fail("x", f"of shape [batch, d={D.shape[1]}] (d from D)", x)
    if bias is not None:
        _check_tensor("bias", bias, "[d]", 1, D)
        if bias.shape[0] != D.shape[1]:
            _fail("bias", f"None or of shape [d={D.shape[1]}]", bias)
    _check_int("chunk_size", chunk_size, 1)


def _check_lasso(D, x, l1, nonneg, max_iter, tol, bias, chunk_size, init, history) -> None:
    _check_problem(D, x, bias, chunk_size)
    _check_real("l1", l1)
    _check_bool("nonneg", nonneg)
    _check_int("max_iter", max_iter, 1)
    _check_real("tol", tol)
    _check_bool("return_history", history)
    if init is not None:
        _check_tensor("init", init, "[batch, n_atoms]", 2, D)
        if init.shape != (x.shape[0], D.shape[0]):
            _fail("init", f"None or of shape [batch, n_atoms] = {[x.shape[0], D.shape[0]]}", init)


def _check_pursuit(D, x, l0, nonneg, bias, chunk_size, history, solver) -> None:
    _check_problem(D, x, bias, chunk_size)
    max_l0 = {"omp": min(D.shape), "gradient_pursuit": D.shape[0]}.get(solver)
    _check_int("l0", l0, 1, max_l0)
    _check_bool("nonneg", nonneg)
    _check_bool("return_history", history)


# ---------------------------------------------------------------- shared machinery


def _chunked(solve: Callable[[slice], tuple], n: int, chunk_size: int) -> tuple:
    """Run ``solve`` on row slices of the batch and join its ``(codes, n_iter, converged,
    support, history)``; a chunk that stopped early repeats its last history row."""
    parts = [solve(slice(i, i + chunk_size)) for i in range(0, max(n, 1), chunk_size)]
    codes, n_iters, converged, supports, histories = zip(*parts, strict=True)
    n_iter = max(n_iters)
    support = None if supports[0] is None else torch.cat(supports)
    history = None
    if histories[0] is not None:
        pad = [torch.cat([h, h[-1:].expand(n_iter + 1 - len(h), -1)]) for h in histories]
        history = torch.cat(pad, dim=1)
    return torch.cat(codes), n_iter, torch.cat(converged), support, history


def _result(D: Tensor, bias: Tensor | None, parts: tuple) -> ITOResult:
    codes, n_iter, converged, support, history = parts
    x_hat = codes @ D if bias is None else torch.addmm(bias, codes, D)
    return ITOResult(codes, x_hat, n_iter, converged, support, history)


def _centre(x: Tensor, bias: Tensor | None) -> Tensor:
    return x if bias is None else x - bias


def lasso_objective(D: Tensor, x: Tensor, codes: Tensor, l1: float, *, bias=None) -> Tensor:
    """Per-sample lasso objective ``0.5 ||x - bias - codes @ D||^2 + l1 ||codes||_1``.

    ``D [n_atoms, d]``, ``x [batch, d]``, ``codes [batch, n_atoms]``, ``bias [d]`` or None;
    returns ``[batch]``.
    """
    _check_problem(D, x, bias, 1)
    _check_tensor("codes", codes, "[batch, n_atoms]", 2, D)
    if codes.shape != (x.shape[0], D.shape[0]):
        _fail("codes", f"of shape [batch, n_atoms] = {[x.shape[0], D.shape[0]]}", codes)
    _check_real("l1", l1)
    return _objective(D, _centre(x, bias), codes, l1)


def _objective(D: Tensor, x: Tensor, codes: Tensor, l1: float) -> Tensor:
    return 0.5 * (x - codes @ D).pow(2).sum(1) + l1 * codes.abs().sum(1)


def _lipschitz(D: Tensor) -> float:
    """``||D||_2^2``, the largest eigenvalue of ``D D^T``, from the smaller Gram matrix."""
    gram = D.T @ D if D.shape[1] <= D.shape[0] else D @ D.T
    return torch.linalg.eigvalsh(gram)[-1].item()


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)


# ---------------------------------------------------------------- ISTA and FISTA

_LASSO_DOC = """
    Solves, for every sample independently (``r = x - bias``)::

        min_c  0.5 * ||r - c @ D||_2^2 + l1 * ||c||_1        (subject to c >= 0 if nonneg)

    by proximal gradient steps of size ``1 / L``, ``L = ||D||_2^2`` (the largest eigenvalue
    of ``D D^T``, computed once per call), each followed by soft-thresholding at ``l1 / L``
    (``max(0, v - l1 / L)`` when ``nonneg``). scikit-learn's ``Lasso`` minimises
    ``(1 / (2 n_samples)) ||y - X w||^2 + alpha ||w||_1``; for one signal ``X = D.T``,
    ``y = r`` and ``n_samples = d``, so it solves this problem at ``alpha = l1 / d``.

    Each iteration costs about ``4 n_atoms d`` FLOPs per sample (two products with ``D``);
    ``L`` costs one symmetric eigendecomposition of the smaller Gram matrix per call.

    Stops when every sample's relative change ``||c_k - c_{k-1}|| <= tol * ||c_k||`` (a zero
    step counts as converged), or after ``max_iter`` iterations.

    Parameters
    ----------
    D : Tensor of shape (n_atoms, d), float32 or float64
    x : Tensor of shape (batch, d), with D's dtype and device
    l1 : float >= 0
    nonneg : bool
    max_iter : int >= 1
    tol : float >= 0
    bias : Tensor of shape (d,) or None
    chunk_size : int >= 1, rows solved at once
    init : Tensor of shape (batch, n_atoms) or None, warm start (default zeros)
    return_history : bool, record the objective of every iterate in ``ITOResult.history``

    Returns
    -------
    ITOResult, ``converged`` per sample, ``n_iter`` the iterations run (most over chunks).
"""


def ista(
    D: Tensor,
    x: Tensor,
    l1: float,
    *,
    nonneg: bool = False,
    max_iter: int = 500,
    tol: float = 1e-6,
    bias: Tensor | None = None,
    chunk_size: int = 4096,
    init: Tensor | None = None,
    return_history: bool = False,
) -> ITOResult:
    """ISTA, iterative shrinkage-thresholding (Daubechies, Defrise & De Mol 2004): O(1/k).
    {doc}"""
    _check_lasso(D, x, l1, nonneg, max_iter, tol, bias, chunk_size, init, return_history)
    args = (l1, nonneg, max_iter, tol, bias, chunk_size, init, return_history)
    return _lasso_impl(D, x, *args, momentum=False, restart=False)


def fista(
    D: Tensor,
    x: Tensor,
    l1: float,
    *,
    nonneg: bool = False,
    max_iter: int = 500,
    tol: float = 1e-6,
    bias: Tensor | None = None,
    chunk_size: int = 4096,
    init: Tensor | None = None,
    return_history: bool = False,
    restart: bool = True,
) -> ITOResult:
    """FISTA: ISTA with Nesterov momentum (Beck & Teboulle 2009, SIAM J. Imaging Sci.): O(1/k^2).

    With ``restart`` (default), a sample's momentum is reset whenever it points against the
    last step, ``<y_{{k-1}} - c_k, c_k - c_{{k-1}}> > 0`` (the gradient scheme of O'Donoghue &
    Candes 2015, "Adaptive restart for accelerated gradient schemes"): one dot product per
    iteration, and linear convergence once the support settles.
    {doc}"""
    _check_lasso(D, x, l1, nonneg, max_iter, tol, bias, chunk_size, init, return_history)
    _check_bool("restart", restart)
    args = (l1, nonneg, max_iter, tol, bias, chunk_size, init, return_history)
    return _lasso_impl(D, x, *args, momentum=True, restart=restart)


ista.__doc__ = ista.__doc__.format(doc=_LASSO_DOC)
fista.__doc__ = fista.__doc__.format(doc=_LASSO_DOC)


def _lasso_impl(
    D, x, l1, nonneg, max_iter, tol, bias, chunk_size, init, history, momentum, restart
) -> ITOResult:
    step = 1.0 / max(_lipschitz(D), torch.finfo(D.dtype).tiny)
    r = _centre(x, bias)

    def solve(rows: slice) -> tuple:
        r_rows = r[rows]  # [b, d]
        c = r_rows.new_zeros(len(r_rows), len(D)) if init is None else init[rows].clone()
        opts = (l1, step, nonneg, max_iter, tol, momentum, restart, history)
        return _proximal_gradient(D, r_rows, c, *opts)

    return _result(D, bias, _chunked(solve, len(x), chunk_size))


def _shrink(v: Tensor, threshold: float, nonneg: bool) -> Tensor:
    """Proximal map of ``threshold * ||.||_1`` (plus the indicator of ``c >= 0``)."""
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
        c_new = _shrink(y - step * grad, step * l1, nonneg)
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


# ---------------------------------------------------------------- greedy pursuits

_PURSUIT_PARAMS = """
    Parameters
    ----------
    D : Tensor of shape (n_atoms, d), float32 or float64; any norms (see the module doc)
    x : Tensor of shape (batch, d), with D's dtype and device
    l0 : int, atoms per sample, >= 1{hi}
    nonneg : bool, only atoms with positive correlation, codes >= 0
    bias : Tensor of shape (d,) or None; ``x - bias`` is coded
    chunk_size : int >= 1, rows solved at once
    return_history : bool, record ``||x - x_hat||`` after every step in ``ITOResult.history``

    Returns
    -------
    ITOResult with ``n_iter = l0``, ``support [batch, l0]`` the atoms in the order chosen.
"""


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

    Each of ``l0`` steps adds to the support ``S`` the unused atom of largest ``|<r, d_i>| /
    ||d_i||`` and refits all coefficients on ``S`` by exact least squares,
    ``c_S = argmin ||x - bias - c_S @ D_S||^2``, i.e. ``(D_S D_S^T) c_S = D_S (x - bias)``,
    through a Cholesky factor of the Gram matrix grown by one row per step (as scikit-learn's
    ``orthogonal_mp``), batched over samples. Chosen atoms are excluded from later steps (the
    residual is orthogonal to them anyway). Per sample, step ``s`` costs about
    ``2 n_atoms d`` (correlations) ``+ 4 s d + 3 s^2`` FLOPs.

    Exactly ``l0`` non-zeros on generic problems. Fewer when the residual is already zero to
    rounding (``||r|| <= 100 eps ||x - bias||``: ``x`` lies in the span of fewer atoms) or
    when the chosen atom is linearly dependent on the support: that atom is kept in
    ``support`` with coefficient 0 (scikit-learn stops with a warning instead).
    """
    _check_pursuit(D, x, l0, False, bias, chunk_size, return_history, "omp")
    return _pursuit_impl(_omp_chunk, D, x, l0, False, bias, chunk_size, return_history)


def gradient_pursuit(
    D: Tensor,
    x: Tensor,
    l0: int,
    *,
    nonneg: bool = True,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    return_history: bool = False,
) -> ITOResult:
    """Gradient pursuit (Blumensath & Davies 2008, "Gradient pursuits", IEEE TSP), fixed L0.

    The ITO solver of the Google DeepMind mech-interp team (progress update, 2024). Each of
    ``l0`` steps adds the unused atom of largest correlation with the residual to the support
    ``S`` (largest positive one if ``nonneg``), then takes one gradient step on ``S`` with the
    exact line-search step: ``g_S = D_S r``, ``c_S += (||g_S||^2 / ||g_S @ D_S||^2) g_S``. So
    the support has exactly ``l0`` atoms; when ``nonneg`` a coefficient can end at 0. (In the
    DeepMind code the support is the non-zero codes plus the new atom, and the argmax may
    re-pick an atom in use, so fewer than ``l0`` atoms can result.) Unlike the selection, the
    step depends on the atom norms: results are not invariant to rescaling atoms.

    Non-negativity: coefficients at 0 whose gradient points below 0 are left out of the step,
    and the step is clamped at 0 as in the DeepMind update. Clamping alone can increase the
    residual, so when it bites the move from the old to the clamped codes is shortened by an
    exact line search on that segment (it is a descent direction, being a projected-gradient
    step): ``||x - x_hat||`` never increases, and the codes stay >= 0. Per sample, step ``s``
    costs about ``2 n_atoms d + 4 s d`` FLOPs (``+ 2 s d`` when the clamp bites).
    """
    _check_pursuit(D, x, l0, nonneg, bias, chunk_size, return_history, "gradient_pursuit")
    return _pursuit_impl(_gp_chunk, D, x, l0, nonneg, bias, chunk_size, return_history)


def matching_pursuit(
    D: Tensor,
    x: Tensor,
    l0: int,
    *,
    nonneg: bool = False,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    return_history: bool = False,
) -> ITOResult:
    """Matching pursuit (Mallat & Zhang 1993), ``l0`` steps.

    Each step picks the atom ``i`` of largest ``|<r, d_i>| / ||d_i||`` (largest positive if
    ``nonneg``; no step when none is positive) and adds ``<r, d_i> / ||d_i||^2`` to ``c_i``:
    no refit, so it is cheap and biased. An atom can be picked twice: at most ``l0``
    non-zeros, and ``support`` can repeat atoms.
    """
    _check_pursuit(D, x, l0, nonneg, bias, chunk_size, return_history, "mp")
    return _pursuit_impl(_mp_chunk, D, x, l0, nonneg, bias, chunk_size, return_history)


omp.__doc__ += _PURSUIT_PARAMS.format(hi=" and <= min(n_atoms, d)").replace(
    "    nonneg : bool, only atoms with positive correlation, codes >= 0\n", ""
)
gradient_pursuit.__doc__ += _PURSUIT_PARAMS.format(hi=" and <= n_atoms")
matching_pursuit.__doc__ += _PURSUIT_PARAMS.format(hi="")


def _pursuit_impl(chunk_fn, D, x, l0, nonneg, bias, chunk_size, history) -> ITOResult:
    r, inv_norm = _centre(x, bias), _inv_norms(D)

    def solve(rows: slice) -> tuple:
        codes, support, hist = chunk_fn(D, inv_norm, r[rows], l0, nonneg, history)
        done = torch.ones(len(codes), dtype=torch.bool, device=codes.device)
        return codes, l0, done, support, torch.stack(hist) if history else None

    return _result(D, bias, _chunked(solve, len(x), chunk_size))


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


def _gp_chunk(D, inv_norm, x, l0, nonneg, history):
    b = x.shape[0]
    S = _Support(D, b, l0)
    c = x.new_zeros(b, l0)  # coefficients in support order
    r = x.clone()
    hist = [r.norm(dim=1)] if history else None
    for s in range(l0):
        corr = r @ D.T  # [b, n_atoms]: minus the gradient of 0.5 ||r||^2
        S.add(s, _select(corr, inv_norm, S.taken, nonneg))
        cs = c[:, : s + 1]
        g = corr.gather(1, S.idx[:, : s + 1])  # [b, s + 1]: descent direction on S
        if nonneg:  # coefficients at 0 that would go negative stay put
            g = g.masked_fill((cs <= 0) & (g < 0), 0.0)
        gD = S.decode(g)  # [b, d]
        step = _safe_div(g.pow(2).sum(1), gD.pow(2).sum(1))[:, None]  # exact line search
        new = cs + step * g
        if nonneg and bool((new < 0).any()):
            delta = new.clamp_min(0) - cs  # a feasible descent direction
            dD = S.decode(delta)
            alpha = _safe_div((dD * r).sum(1), dD.pow(2).sum(1)).clamp(0, 1)[:, None]
            c[:, : s + 1], r = cs + alpha * delta, r - alpha * dD
        else:
            c[:, : s + 1], r = new, r - step * gD
        if history:
            hist.append(r.norm(dim=1))
    return S.scatter(c), S.idx, hist


def _mp_chunk(D, inv_norm, x, l0, nonneg, history):
    b = x.shape[0]
    S = _Support(D, b, l0)
    c = x.new_zeros(b, l0)  # the increment of each step; an atom can recur
    r = x.clone()
    hist = [r.norm(dim=1)] if history else None
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


# ---------------------------------------------------------------- SAE + ITO

SOLVERS: dict[str, Callable[..., ITOResult]] = {
    "ista": ista,
    "fista": fista,
    "omp": omp,
    "gradient_pursuit": gradient_pursuit,
    "matching_pursuit": matching_pursuit,
}


def sae_ito(sae, x: Tensor, solver: str = "gradient_pursuit", **solver_kwargs) -> ITOResult:
    """SAE+ITO: codes for ``x [batch, d_in]`` from ``solver`` on the SAE's decoder.

    Runs ``SOLVERS[solver](sae.W_dec, x, bias=sae.b_dec, **solver_kwargs)`` without gradients:
    the SAE's encoder is ignored, its dictionary ``W_dec [d_sae, d_in]`` and decoder bias are
    kept, so ``x_hat = codes @ W_dec + b_dec = sae.decode(codes)``. ``solver_kwargs`` are the
    solver's own (``l1`` for ista/fista, ``l0`` for the pursuits, ...); ``bias`` is not one.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    if "bias" in solver_kwargs:
        raise ValueError("bias must not be given: sae_ito uses sae.b_dec")
    for name in ("W_dec", "b_dec"):
        if not isinstance(getattr(sae, name, None), Tensor):
            raise ValueError(f"sae must have a tensor attribute {name}, got {type(sae).__name__}")
    with torch.no_grad():
        W_dec, b_dec = sae.W_dec.detach(), sae.b_dec.detach()
        return SOLVERS[solver](W_dec, x.detach(), bias=b_dec, **solver_kwargs)
