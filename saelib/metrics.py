"""Evaluation metrics for sparse autoencoders: pure functions, tensors in, floats or tensors out.

Conventions: activations ``x``, ``x_hat`` are ``[n, d_in]`` (extra leading dims are flattened),
codes ``f`` are ``[n, d_sae]``, dictionaries are ``[n_atoms, d_in]`` with atoms as rows.
Scalar metrics return Python floats, accumulated in float64. Inputs are never modified and
no gradient flows through any metric.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


class MatchedCosines(NamedTuple):
    """Agreement between a true and a learned dictionary (see :func:`matched_cosines`)."""

    max_abs_cos: Tensor  # [n_true] best |cos| of each true atom to any learned atom
    mmcs: float  # mean of max_abs_cos
    hungarian_abs_cos: Tensor  # [n_true] |cos| under the one-to-one matching, 0 if unmatched
    hungarian_mean: float  # mean of hungarian_abs_cos
    assignment: Tensor  # [n_true] long, matched learned atom or -1


class MCCResult(NamedTuple):
    """Mean correlation coefficient between true and learned codes (see :func:`mcc`)."""

    mcc: float  # mean of per_feature
    per_feature: Tensor  # [n_true] matched |Pearson r|, 0 if unmatched
    assignment: Tensor  # [n_true] long, matched learned latent or -1


# ---------------------------------------------------------------- validation helpers


def _rows(t: Tensor, name: str) -> Tensor:
    """Flatten ``t`` of shape ``[..., d]`` to ``[n, d]``, detached; require ``n >= 1``."""
    if t.ndim < 2 or t.numel() == 0:
        raise ValueError(
            f"{name} must have shape [n, d] (or [..., d]), n, d >= 1, got {list(t.shape)}"
        )
    return t.detach().reshape(-1, t.shape[-1])


def _pair(x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    """Check ``x_hat`` matches ``x`` and return both as float64 ``[n, d_in]``."""
    if x_hat.shape != x.shape:
        raise ValueError(
            f"x_hat must have the same shape as x {list(x.shape)}, got {list(x_hat.shape)}"
        )
    return _rows(x, "x").double(), _rows(x_hat, "x_hat").double()


def _matrix(t: Tensor, name: str, min_rows: int = 1) -> Tensor:
    """Check ``t`` is a finite 2-D tensor with at least ``min_rows`` rows and one column."""
    if t.ndim != 2 or t.shape[0] < min_rows or t.shape[1] < 1:
        raise ValueError(
            f"{name} must be 2-D with at least {min_rows} row(s) and 1 column, got {list(t.shape)}"
        )
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t.detach()


def _work_dtype(a: Tensor, b: Tensor) -> torch.dtype:
    """float64 if either input is float64, else float32 (ints and halves are promoted)."""
    return torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32


def _hungarian(sim: Tensor) -> tuple[Tensor, Tensor]:
    """One-to-one matching of rows to columns maximising the total of ``sim [n_rows, n_cols]``.

    Returns the matched similarity per row (0 for unmatched rows, which happen only when
    ``n_cols < n_rows``) and the matched column per row (-1 if unmatched), on ``sim.device``.
    """
    cost = sim.cpu().double().numpy()
    rows, cols = linear_sum_assignment(cost, maximize=True)
    values = np.zeros(cost.shape[0])
    values[rows] = cost[rows, cols]
    assignment = np.full(cost.shape[0], -1, dtype=np.int64)
    assignment[rows] = cols
    return (
        torch.from_numpy(values).to(sim.device, sim.dtype),
        torch.from_numpy(assignment).to(sim.device),
    )


# ---------------------------------------------------------------- reconstruction


def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained, as a ratio of sums over the evaluation set.

    ``FVU = sum_b ||x_b - x_hat_b||^2 / sum_b ||x_b - mu||^2``, ``mu = mean_b x_b`` (per
    dimension). Centred, so adding a constant vector to both ``x`` and ``x_hat`` leaves it
    unchanged; a ratio of sums, not a mean of per-row ratios. ``fvu(x, mu) == 1``.

    Parameters
    ----------
    x : Tensor of shape (n, d_in) or (..., d_in)
        Activations.
    x_hat : Tensor of the same shape
        Reconstructions.

    Returns
    -------
    float
        0 for a perfect reconstruction, 1 for predicting the mean.
    """
    x, x_hat = _pair(x, x_hat)
    total = (x - x.mean(0)).pow(2).sum()
    if total == 0:
        raise ValueError("x has zero variance over the evaluation set: FVU is undefined")
    return ((x - x_hat).pow(2).sum() / total).item()


def explained_variance(x: Tensor, x_hat: Tensor) -> float:
    """``1 - fvu(x, x_hat)``; same shapes and formula as :func:`fvu`."""
    return 1.0 - fvu(x, x_hat)


def shrinkage(x: Tensor, x_hat: Tensor) -> float:
    """Relative reconstruction norm ``gamma``: how much ``x_hat`` is scaled down from ``x``.

    Rajamanoharan et al. (2024), "Improving dictionary learning with gated sparse
    autoencoders", eq. 9 (corrected): ``gamma = argmin_g sum_b ||x_hat_b / g - x_b||^2``.
    With ``u = 1/g`` the objective is ``u^2 A - 2 u B + C``, where ``A = sum_b <x_hat_b, x_hat_b>``
    and ``B = sum_b <x_hat_b, x_b>``; it is minimised at ``u = B / A``, so::

        gamma = sum_b <x_hat_b, x_hat_b> / sum_b <x_hat_b, x_b>

    Returns ``gamma`` as a float: ``gamma < 1`` means shrinkage (``x_hat = 0.5 x`` gives 0.5).

    Parameters
    ----------
    x : Tensor of shape (n, d_in) or (..., d_in)
        Activations (uncentred, as in the paper).
    x_hat : Tensor of the same shape
        Reconstructions.
    """
    x, x_hat = _pair(x, x_hat)
    num, den = x_hat.pow(2).sum(), (x_hat * x).sum()
    if num == 0:
        raise ValueError("x_hat is all zeros: shrinkage is undefined")
    if den == 0:
        raise ValueError("x_hat is orthogonal to x: shrinkage is undefined")
    return (num / den).item()


# ---------------------------------------------------------------- sparsity


def l0(f: Tensor) -> float:
    """Mean number of non-zero latents per row, ``mean_b #{i : f_bi != 0}``.

    Parameters
    ----------
    f : Tensor of shape (n, d_sae) or (..., d_sae)
        Codes.
    """
    f = _rows(f, "f")
    return (f != 0).sum(-1).double().mean().item()


def _fire_counts(f: Tensor) -> tuple[Tensor, int]:
    """Number of rows on which each latent is non-zero, ``[d_sae]`` long, and the row count."""
    f = _rows(f, "f")
    return (f != 0).sum(0), f.shape[0]


def firing_rates(f: Tensor) -> Tensor:
    """Fraction of rows on which each latent is non-zero.

    Parameters
    ----------
    f : Tensor of shape (n, d_sae) or (..., d_sae)
        Codes.

    Returns
    -------
    Tensor of shape (d_sae,), float32
    """
    counts, n = _fire_counts(f)
    return (counts.double() / n).float()


def dead_fraction(f: Tensor) -> float:
    """Fraction of latents that are zero on every row of ``f [n, d_sae]``."""
    counts, _ = _fire_counts(f)
    return (counts == 0).double().mean().item()


def dense_fraction(f: Tensor, threshold: float = 0.1) -> float:
    """Fraction of latents firing on more than ``threshold`` of the rows of ``f [n, d_sae]``.

    The comparison is strict, in float64: a latent firing on exactly 10% of rows is not
    dense at ``threshold=0.1``.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    counts, n = _fire_counts(f)
    return (counts.double() / n > threshold).double().mean().item()


# ---------------------------------------------------------------- ground-truth recovery


def matched_cosines(true_dict: Tensor, learned_dict: Tensor) -> MatchedCosines:
    """Compare a learned dictionary with a known one by the |cosine| between their atoms.

    ``C_ij = |<t_i, l_j>| / (||t_i|| ||l_j||)``, one matmul on row-normalised atoms (zero
    atoms have cosine 0 with everything). ``max_abs_cos_i = max_j C_ij`` and its mean is the
    MMCS (Sharkey et al. 2022, "Taking features out of superposition"). The Hungarian
    variant matches atoms one-to-one, maximising ``sum_i C_i,a(i)``
    (``scipy.optimize.linear_sum_assignment``), so one learned atom cannot account for
    two true ones; with ``n_learned < n_true`` the unmatched true atoms score 0.

    Parameters
    ----------
    true_dict : Tensor of shape (n_true, d_in)
        Ground-truth atoms as rows; any norms.
    learned_dict : Tensor of shape (n_learned, d_in)
        Learned atoms as rows (e.g. ``W_dec``); any norms.

    Returns
    -------
    MatchedCosines
        ``max_abs_cos``, ``hungarian_abs_cos``, ``assignment`` of shape (n_true,); ``mmcs``
        and ``hungarian_mean`` floats. Computed in float64 if either input is, else float32.
    """
    true_dict = _matrix(true_dict, "true_dict")
    learned_dict = _matrix(learned_dict, "learned_dict")
    if learned_dict.shape[1] != true_dict.shape[1]:
        raise ValueError(
            f"learned_dict must have d_in = {true_dict.shape[1]} columns like true_dict, "
            f"got shape {list(learned_dict.shape)}"
        )
    dtype = _work_dtype(true_dict, learned_dict)
    t = torch.nn.functional.normalize(true_dict.to(dtype), dim=1)  # [n_true, d_in]
    l = torch.nn.functional.normalize(learned_dict.to(dtype), dim=1)  # [n_learned, d_in]
    cos = (t @ l.T).abs().clamp_(max=1.0)  # [n_true, n_learned]
    best = cos.max(dim=1).values  # [n_true]
    matched, assignment = _hungarian(cos)
    return MatchedCosines(best, best.mean().item(), matched, matched.mean().item(), assignment)


def _standardise(f: Tensor, dtype: torch.dtype) -> Tensor:
    """Centre each column of ``f [n, m]`` and scale it to unit norm; constant columns -> 0.

    Constancy is tested exactly on the input (column max == min): rounding in the mean
    can leave a constant column with tiny, meaningless residuals.
    """
    constant = f.amax(dim=0) == f.amin(dim=0)  # [m]
    z = f.to(dtype)
    z = z - z.mean(dim=0)
    norm = z.pow(2).sum(dim=0).sqrt()  # [m]; z.norm(dim=0) is ~4x slower on CPU
    return z * torch.where(constant | (norm == 0), 0.0, 1.0 / norm)


def mcc(true_codes: Tensor, learned_codes: Tensor) -> MCCResult:
    """Mean correlation coefficient between true and learned codes under a one-to-one matching.

    ``R_ij`` is the Pearson correlation between column ``i`` of ``true_codes`` and column
    ``j`` of ``learned_codes`` over the ``n`` rows (one matmul on centred, unit-norm
    columns; a constant column has correlation 0 with everything). Latents are matched
    one-to-one maximising ``sum_i |R_i,a(i)|`` (Hungarian), and MCC is the mean matched
    ``|R|`` over true features, unmatched ones counting 0 (O'Neill et al. 2024,
    "Compute optimal inference and provable amortisation gap in sparse autoencoders").
    Invariant to permuting, rescaling, shifting and sign-flipping learned latents.

    Parameters
    ----------
    true_codes : Tensor of shape (n, n_true)
        Ground-truth feature activations.
    learned_codes : Tensor of shape (n, n_learned)
        Learned codes on the same ``n`` inputs.

    Returns
    -------
    MCCResult
        ``mcc`` float; ``per_feature`` and ``assignment`` of shape (n_true,). Computed in
        float64 if either input is, else float32.
    """
    true_codes = _matrix(true_codes, "true_codes", min_rows=2)
    learned_codes = _matrix(learned_codes, "learned_codes", min_rows=2)
    if learned_codes.shape[0] != true_codes.shape[0]:
        raise ValueError(
            f"learned_codes must have n = {true_codes.shape[0]} rows like true_codes, "
            f"got shape {list(learned_codes.shape)}"
        )
    dtype = _work_dtype(true_codes, learned_codes)
    a = _standardise(true_codes, dtype)  # [n, n_true]
    b = _standardise(learned_codes, dtype)  # [n, n_learned]
    corr = (a.T @ b).abs().clamp_(max=1.0)  # [n_true, n_learned]
    per_feature, assignment = _hungarian(corr)
    return MCCResult(per_feature.mean().item(), per_feature, assignment)


# ---------------------------------------------------------------- downstream loss


def ce_loss_recovered(clean: float, spliced: float, ablated: float) -> float:
    """Fraction of the loss gap closed by a reconstruction: ``(L_abl - L_spl) / (L_abl - L_clean)``.

    ``clean`` is the model's next-token loss, ``spliced`` the loss with the SAE's
    reconstruction spliced in at one hook, ``ablated`` the loss with that activation
    zero- or mean-ablated. 1: as good as the clean model; 0: as bad as the ablation;
    negative: worse than the ablation (see :mod:`saelib.lm.splice`).
    """
    gap = ablated - clean
    if gap == 0:
        raise ValueError(
            "ablated loss equals clean loss: the ablation does not change the model, so "
            "ce_loss_recovered is undefined"
        )
    return (ablated - spliced) / gap
