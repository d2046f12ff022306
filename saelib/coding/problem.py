"""What every ITO solver shares: the result, the argument checks and the chunked batch.

A problem is a dictionary ``D [n_atoms, d]`` (atoms as rows, any norms), signals
``x [batch, d]`` with ``D``'s dtype and device, and an optional ``bias [d]``; a solver returns
codes ``c [batch, n_atoms]`` with ``x_hat = c @ D + bias``. The batch is solved in chunks of
``chunk_size`` rows, so the working memory is ``O(chunk_size * n_atoms)`` besides ``D``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from saelib.validation import check_int, check_real, require

__all__ = [
    "ITOResult",
    "centre",
    "check_flag",
    "check_penalty",
    "check_problem",
    "check_shape",
    "check_tensor",
    "chunked",
    "result",
    "safe_div",
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


def check_flag(name: str, value: object) -> None:
    """A ValueError naming ``name`` unless ``value`` is a bool."""
    require(isinstance(value, bool), name, value, "True or False")


def check_tensor(name: str, t: object, shape: str, ndim: int, like: Tensor | None) -> None:
    """``t`` must be a finite float32/float64 ``ndim``-D tensor (with ``like``'s dtype, device)."""
    shown = t.shape if isinstance(t, Tensor) else t
    require(isinstance(t, Tensor) and t.ndim == ndim, name, shown, f"a {ndim}-D tensor {shape}")
    require(t.dtype in (torch.float32, torch.float64), name, t.dtype, "float32 or float64")
    if like is not None:
        same = (t.dtype, t.device) == (like.dtype, like.device)
        require(
            same, name, (t.dtype, t.device), f"of D's dtype and device {like.dtype, like.device}"
        )
    require(bool(torch.isfinite(t).all()), name, "NaN or inf", "finite")


def check_shape(name: str, t: Tensor, shape: tuple[int, ...], allowed: str) -> None:
    """``t.shape`` must be ``shape``; ``allowed`` says so in the message."""
    require(tuple(t.shape) == shape, name, t.shape, allowed)


def check_problem(D: Tensor, x: Tensor, bias: Tensor | None, chunk_size: int) -> None:
    """The arguments every solver takes, checked against each other."""
    check_tensor("D", D, "[n_atoms, d]", 2, None)
    require(D.numel() > 0, "D", D.shape, "non-empty, n_atoms >= 1 and d >= 1")
    check_tensor("x", x, "[batch, d]", 2, D)
    check_shape("x", x, (x.shape[0], D.shape[1]), f"of shape [batch, d={D.shape[1]}] (d from D)")
    if bias is not None:
        check_tensor("bias", bias, "[d]", 1, D)
        check_shape("bias", bias, (D.shape[1],), f"None or of shape [d={D.shape[1]}]")
    check_int("chunk_size", chunk_size, 1)


def check_penalty(name: str, value: object) -> None:
    """A penalty or tolerance: a finite number >= 0."""
    check_real(name, value, 0)


def chunked(solve: Callable[[slice], tuple], n: int, chunk_size: int) -> tuple:
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


def result(D: Tensor, bias: Tensor | None, parts: tuple) -> ITOResult:
    """The :class:`ITOResult` of :func:`chunked`'s parts, with ``x_hat = codes @ D + bias``."""
    codes, n_iter, converged, support, history = parts
    x_hat = codes @ D if bias is None else torch.addmm(bias, codes, D)
    return ITOResult(codes, x_hat, n_iter, converged, support, history)


def centre(x: Tensor, bias: Tensor | None) -> Tensor:
    """``x - bias`` (``x`` when there is no bias)."""
    return x if bias is None else x - bias


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)
