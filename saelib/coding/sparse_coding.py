"""Sparse coding: learn a dictionary by alternating ITO codes and dictionary updates.

The classic baseline against which SAEs are compared (Olshausen & Field 1996; the
amortisation-gap paper of O'Neill et al. calls it "sparse coding"). For data ``X [n, d]`` it
seeks unit-norm atoms ``D [n_atoms, d]`` and codes ``C [n, n_atoms]`` minimising the mean over
samples of

    0.5 ||x_b - c_b @ D||^2 + l1 ||c_b||_1     with ista / fista (the lasso), or
    0.5 ||x_b - c_b @ D||^2,  ||c_b||_0 <= l0   with omp / gradient_pursuit / matching_pursuit.

Each iteration (after codes for the initial dictionary, random data rows normalised):

1. **Dictionary** for fixed codes: ``lstsq`` solves ``min_D ||X - C D||^2 + lam ||D||^2`` in
   closed form, ``(C^T C + lam I) D = C^T X`` with ``lam = ridge * mean(diag(C^T C))`` (the
   "method of optimal directions", Engan, Aase & Husoy 1999; the ridge keeps the solve stable);
   ``gradient`` takes ``grad_steps`` steps of size ``1 / ||C^T C||_2`` on the same squared error.
2. **Renormalise**: ``d_i <- d_i / ||d_i||`` and ``c_i <- c_i ||d_i||``, which keeps ``C D``.
   Unused atoms (no non-zero code) are re-initialised to random data rows, normalised; they
   carry no code, so ``C D`` is unchanged again (sklearn's ``_update_dict`` draws Gaussian
   atoms instead; data rows start in the data's span).
3. **Codes** by the ITO solver on the new ``D`` (ista/fista warm-started from the rescaled
   codes). Per sample, the rescaled old codes are kept when they score better, so this step
   never increases the objective.

For the ``l0`` objective every step is then non-increasing (up to the ridge). For the lasso,
step 2 changes ``||C||_1``, so the objective can rise slightly after a renormalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from saelib.coding import ito
from saelib.progress import progress_bar
from saelib.validation import is_int, is_positive, require

Solver = Literal["fista", "ista", "omp", "gradient_pursuit", "matching_pursuit"]
DictUpdate = Literal["lstsq", "gradient"]
L1_SOLVERS = ("fista", "ista")

__all__ = ["SparseCodingConfig", "SparseCodingResult", "fit_dictionary"]


def _require(ok: bool, name: str, value: object, allowed: str) -> None:
    require(ok, f"SparseCodingConfig.{name}", value, allowed)


@dataclass(frozen=True)
class SparseCodingConfig:
    """Settings of :func:`fit_dictionary`, validated at construction."""

    n_atoms: int
    """Dictionary size, >= 1 (and <= the number of samples)."""
    solver: Solver = "omp"
    """ITO solver for the codes: fista or ista (take ``l1``), omp, gradient_pursuit,
    matching_pursuit (take ``l0``)."""
    l1: float | None = None
    """Lasso penalty, > 0: required by fista and ista, None otherwise."""
    l0: int | None = None
    """Atoms per sample, in [1, n_atoms]: required by the pursuits, None otherwise."""
    nonneg: bool = False
    """Non-negative codes (not available with omp)."""
    n_iter: int = 30
    """Alternating iterations (dictionary update then codes), >= 1."""
    dict_update: DictUpdate = "lstsq"
    """``lstsq`` (closed form with a ridge) or ``gradient`` (``grad_steps`` steps)."""
    ridge: float = 1e-6
    """Relative Tikhonov weight of the lstsq update, > 0 (times the mean of diag(C^T C))."""
    grad_steps: int = 10
    """Gradient steps per dictionary update with dict_update='gradient', >= 1."""
    solver_max_iter: int = 200
    """Iteration cap of ista / fista per code step, >= 1."""
    solver_tol: float = 1e-5
    """Relative-change tolerance of ista / fista, > 0."""
    chunk_size: int = 4096
    """Rows the solver codes at once, >= 1."""
    seed: int = 0
    """Seeds the initial dictionary and the re-initialisation of unused atoms."""

    def __post_init__(self) -> None:
        _require(is_int(self.n_atoms) and self.n_atoms >= 1, "n_atoms", self.n_atoms, "an int >= 1")
        solvers = get_args(Solver)
        _require(self.solver in solvers, "solver", self.solver, f"one of {list(solvers)}")
        if self.solver in L1_SOLVERS:
            allowed = f"a number > 0 for solver {self.solver!r}"
            _require(is_positive(self.l1), "l1", self.l1, allowed)
            _require(self.l0 is None, "l0", self.l0, f"None for solver {self.solver!r}")
        else:
            ok = is_int(self.l0) and 1 <= self.l0 <= self.n_atoms
            _require(
                ok, "l0", self.l0, f"an int in [1, n_atoms={self.n_atoms}] for {self.solver!r}"
            )
            _require(self.l1 is None, "l1", self.l1, f"None for solver {self.solver!r}")
        _require(isinstance(self.nonneg, bool), "nonneg", self.nonneg, "True or False")
        _require(not (self.nonneg and self.solver == "omp"), "nonneg", True, "False with omp")
        for name in ("n_iter", "grad_steps", "solver_max_iter", "chunk_size"):
            value = getattr(self, name)
            _require(is_int(value) and value >= 1, name, value, "an int >= 1")
        updates = get_args(DictUpdate)
        _require(self.dict_update in updates, "dict_update", self.dict_update, f"one of {updates}")
        for name in ("ridge", "solver_tol"):
            _require(is_positive(getattr(self, name)), name, getattr(self, name), "a number > 0")
        _require(is_int(self.seed), "seed", self.seed, "an int")


class SparseCodingResult(NamedTuple):
    """What :func:`fit_dictionary` learned."""

    dictionary: Tensor  # [n_atoms, d], unit-norm rows
    codes: Tensor  # [n, n_atoms], the solver's codes for the final dictionary
    history: Tensor  # [n_iter + 1] float64: mean objective after each code step, from the start
    n_resampled: Tensor  # [n_iter] long: unused atoms re-initialised at each iteration


def fit_dictionary(
    x: Tensor, config: SparseCodingConfig, *, init: Tensor | None = None, progress: bool = False
) -> SparseCodingResult:
    """Learn a dictionary for ``x [n, d]`` by alternating codes and dictionary updates.

    ``init [n_atoms, d]`` replaces the random initial dictionary (it is renormalised);
    ``progress`` shows a tqdm bar. See the module docstring for the objective and steps.
    Deterministic for a given ``config.seed`` on a given device.
    """
    if not isinstance(config, SparseCodingConfig):
        raise ValueError(f"config must be a SparseCodingConfig, got {type(config).__name__}")
    if not isinstance(x, Tensor) or x.ndim != 2 or x.dtype not in (torch.float32, torch.float64):
        raise ValueError("x must be a float32 or float64 tensor of shape [n, d]")
    if x.shape[0] < config.n_atoms or x.shape[1] < 1:
        raise ValueError(
            f"x must have at least n_atoms={config.n_atoms} rows and 1 column, "
            f"got shape {list(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    if config.solver == "omp" and config.l0 > x.shape[1]:
        raise ValueError(
            f"SparseCodingConfig.l0 must be <= d={x.shape[1]} for omp, got {config.l0}"
        )
    if init is not None and (
        not isinstance(init, Tensor) or init.shape != (config.n_atoms, x.shape[1])
    ):
        raise ValueError(
            f"init must be None or of shape [n_atoms, d] = {[config.n_atoms, x.shape[1]]}"
        )
    return _fit_impl(x, config, init, progress)


def _fit_impl(x: Tensor, cfg: SparseCodingConfig, init: Tensor | None, progress: bool):
    g = torch.Generator().manual_seed(cfg.seed)
    if init is None:
        init = x[torch.randperm(len(x), generator=g)[: cfg.n_atoms].to(x.device)]
    D = F.normalize(init.to(x), dim=1)
    l1 = cfg.l1 or 0.0
    C = _codes(x, D, None, cfg)
    history, resampled = [ito.lasso_objective(D, x, C, l1).double().mean()], []
    bar = progress_bar(progress, range(cfg.n_iter), desc="sparse coding")
    for _ in bar:
        D = _update_dictionary(x, C, D, cfg)
        D, C, n_new = _renormalise(x, C, D, g)
        C = _codes(x, D, C, cfg)
        history.append(ito.lasso_objective(D, x, C, l1).double().mean())
        resampled.append(n_new)
        bar.set_postfix(objective=f"{history[-1].item():.4g}", refresh=False)
    return SparseCodingResult(D, C, torch.stack(history).cpu(), torch.tensor(resampled))


def _codes(x: Tensor, D: Tensor, previous: Tensor | None, cfg: SparseCodingConfig) -> Tensor:
    """Codes ``[n, n_atoms]`` from the solver, or ``previous`` per sample where it scores better."""
    kw = {"chunk_size": cfg.chunk_size}
    if cfg.solver != "omp":
        kw["nonneg"] = cfg.nonneg
    if cfg.solver in L1_SOLVERS:
        kw.update(max_iter=cfg.solver_max_iter, tol=cfg.solver_tol, init=previous)
        new = ito.SOLVERS[cfg.solver](D, x, cfg.l1, **kw).codes
    else:
        new = ito.SOLVERS[cfg.solver](D, x, cfg.l0, **kw).codes
    if previous is None:
        return new
    l1 = cfg.l1 or 0.0
    keep = ito.lasso_objective(D, x, previous, l1) < ito.lasso_objective(D, x, new, l1)  # [n]
    return torch.where(keep[:, None], previous, new)


def _update_dictionary(x: Tensor, C: Tensor, D: Tensor, cfg: SparseCodingConfig) -> Tensor:
    """Dictionary ``[n_atoms, d]`` lowering ``||x - C D||^2`` for fixed codes (not normalised)."""
    CtC, CtX = C.T @ C, C.T @ x  # [n_atoms, n_atoms], [n_atoms, d]
    if cfg.dict_update == "lstsq":
        lam = cfg.ridge * CtC.diagonal().mean().clamp_min(torch.finfo(x.dtype).tiny)
        return torch.linalg.solve(
            CtC + lam * torch.eye(len(CtC), dtype=x.dtype, device=x.device), CtX
        )
    L = torch.linalg.eigvalsh(CtC)[-1]  # Lipschitz constant of the gradient in D
    if L <= 0:
        return D
    for _ in range(cfg.grad_steps):
        D = D - (CtC @ D - CtX) / L
    return D


def _renormalise(x: Tensor, C: Tensor, D: Tensor, g: torch.Generator):
    """Unit-norm atoms with codes rescaled to keep ``C D``; unused atoms re-drawn from data rows."""
    norms = D.norm(dim=1)  # [n_atoms]
    unused = ~(C != 0).any(0) | (norms == 0)
    scale = torch.where(unused, 0.0, norms)
    C = C * scale  # zeroes the (already zero) codes of unused atoms
    D = D / torch.where(unused, 1.0, norms)[:, None]
    n_new = int(unused.sum())
    if n_new:
        rows = torch.randint(len(x), (n_new,), generator=g).to(x.device)
        D[unused] = F.normalize(x[rows], dim=1)
    return D, C, n_new
