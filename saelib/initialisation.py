"""Initialisation tricks applied before training: encoder from decoder, b_dec at the median."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def geometric_median(x: Tensor, n_iter: int = 100, tol: float = 1e-6) -> Tensor:
    """Point minimising ``sum_i ||x_i - m||`` over rows of ``x [n, d]`` (Weiszfeld's algorithm).

    Used to initialise ``b_dec`` (Bricken et al. 2023): unlike the mean it ignores a few
    large outliers. Computed in float64; returns ``[d]`` in ``x``'s dtype.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape [n >= 1, d], got {tuple(x.shape)}")
    pts = x.detach().cpu().double()  # float64 is missing on some devices (mps)
    m = pts.mean(0)
    for _ in range(n_iter):
        w = 1.0 / (pts - m).norm(dim=-1).clamp_min(1e-12)  # inverse distances
        m_next = (w[:, None] * pts).sum(0) / w.sum()
        converged = (m_next - m).norm() <= tol * (1.0 + m.norm())
        m = m_next
        if converged:
            break
    return m.to(device=x.device, dtype=x.dtype)


def b_dec_init(x: Tensor, method: str) -> Tensor | None:
    """Initial ``b_dec [d_in]`` from a sample ``x [n, d_in]``: zeros (None), mean or median."""
    if method == "zeros":
        return None
    if method == "mean":
        return x.mean(0)
    return geometric_median(x)
