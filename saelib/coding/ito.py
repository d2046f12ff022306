"""Inference-time optimisation (ITO): sparse codes for signals on a fixed dictionary.

Given a dictionary ``D [n_atoms, d]`` (atoms as rows, the layout of ``SAE.W_dec``; any norms),
an optional ``bias [d]`` and signals ``x [batch, d]``, every solver returns an
:class:`~saelib.coding.problem.ITOResult` with codes ``c [batch, n_atoms]`` and the
reconstruction ``x_hat = c @ D + bias``:

- the lasso (``saelib.coding.lasso``): :func:`ista`, :func:`fista`, per sample
  ``min_c 0.5 ||x - bias - c @ D||^2 + l1 ||c||_1`` (optionally ``c >= 0``);
- greedy pursuits (``saelib.coding.pursuit``): :func:`omp`, :func:`gradient_pursuit`,
  :func:`matching_pursuit`, ``l0`` atoms;
- the lasso by working sets (``saelib.coding.working_set``): :func:`lasso_working_set`, the
  same problem as ``fista`` solved on small Gram matrices; not in ``SOLVERS`` (its cost is
  data dependent);
- :func:`sae_ito` ("SAE+ITO"): one of them on a trained SAE's decoder and decoder bias.

Every public solver validates its arguments (``ValueError`` naming the parameter) and calls an
unchecked implementation. One code path for CPU and CUDA, float32 and float64; results live
on ``x``'s device. ``SOLVERS`` maps every solver's name to it (the one list of names); the
lasso solvers take ``l1``, the pursuits ``l0``.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from saelib.coding.lasso import LASSO_SOLVERS, fista, ista, lasso_objective
from saelib.coding.problem import ITOResult
from saelib.coding.pursuit import PURSUIT_SOLVERS, gradient_pursuit, matching_pursuit, omp
from saelib.coding.working_set import lasso_working_set
from saelib.validation import check_choice, require

__all__ = [
    "ITOResult",
    "LASSO_SOLVERS",
    "PURSUIT_SOLVERS",
    "SOLVERS",
    "fista",
    "gradient_pursuit",
    "ista",
    "lasso_objective",
    "lasso_working_set",
    "matching_pursuit",
    "omp",
    "sae_ito",
]

SOLVERS = LASSO_SOLVERS | PURSUIT_SOLVERS
"""Every ITO solver by name: ista, fista (take ``l1``), omp, gradient_pursuit,
matching_pursuit (take ``l0``)."""


def sae_ito(sae, x: Tensor, solver: str = "gradient_pursuit", **solver_kwargs) -> ITOResult:
    """SAE+ITO: codes for ``x [batch, d_in]`` from ``solver`` on the SAE's decoder.

    Runs ``SOLVERS[solver](sae.W_dec, x, bias=sae.b_dec, **solver_kwargs)`` without gradients:
    the SAE's encoder is ignored, its dictionary ``W_dec [d_sae, d_in]`` and decoder bias are
    kept, so ``x_hat = codes @ W_dec + b_dec = sae.decode(codes)``. ``solver_kwargs`` are the
    solver's own (``l1`` for ista/fista, ``l0`` for the pursuits, ...); ``bias`` is not one.
    """
    check_choice("solver", solver, SOLVERS)
    require("bias" not in solver_kwargs, "bias", "given", "not given: sae_ito uses sae.b_dec")
    needed = [
        p.name
        for p in list(inspect.signature(SOLVERS[solver]).parameters.values())[2:]
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    for name in needed:
        require(name in solver_kwargs, name, None, f"given: sae_ito(solver={solver!r}) needs it")
    for name in ("W_dec", "b_dec"):
        has = isinstance(getattr(sae, name, None), Tensor)
        require(has, "sae", type(sae).__name__, f"an SAE with a tensor attribute {name}")
    with torch.no_grad():
        W_dec, b_dec = sae.W_dec.detach(), sae.b_dec.detach()
        return SOLVERS[solver](W_dec, x.detach(), bias=b_dec, **solver_kwargs)
