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

from saelib.coding.ito import LASSO_SOLVERS, SOLVERS, lasso_objective
from saelib.coding.problem import check_tensor
from saelib.progress import progress_bar
from saelib.validation import check_choice, check_int, check_real, require

DictUpdate = Literal["lstsq", "gradient"]
DICT_UPDATES: tuple[str, ...] = get_args(DictUpdate)

__all__ = ["DICT_UPDATES", "SparseCodingConfig", "SparseCodingResult", "fit_dictionary"]


@dataclass(frozen=True)
class SparseCodingConfig:
    """Settings of :func:`fit_dictionary`, validated at construction."""

    n_atoms: int
    """Dictionary size, >= 1 (and <= the number of samples)."""
    solver: str = "omp"
    """ITO solver for the codes, a key of ``saelib.coding.ito.SOLVERS``: fista or ista (take
    ``l1``), omp, gradient_pursuit, matching_pursuit (take ``l0``)."""
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
        name = "SparseCodingConfig."
        check_int(name + "n_atoms", self.n_atoms, 1)
        check_choice(name + "solver", self.solver, SOLVERS)
        lasso = self.solver in LASSO_SOLVERS
        unused = "l0" if lasso else "l1"  # the other one is required
        value = getattr(self, unused)
        require(value is None, name + unused, value, f"None for solver {self.solver!r}")
        if lasso:
            check_real(name + "l1", self.l1, 0, open_low=True)
        else:
            check_int(name + "l0", self.l0, 1, self.n_atoms)
        require(isinstance(self.nonneg, bool), name + "nonneg", self.nonneg, "True or False")
        require(not (self.nonneg and self.solver == "omp"), name + "nonneg", True, "False with omp")
        for field in ("n_iter", "grad_steps", "solver_max_iter", "chunk_size"):
            check_int(name + field, getattr(self, field), 1)
        check_choice(name + "dict_update", self.dict_update, DICT_UPDATES)
        for field in ("ridge", "solver_tol"):
            check_real(name + field, getattr(self, field), 0, open_low=True)
        check_int(name + "seed", self.seed)


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
    require(
        isinstance(config, SparseCodingConfig),
        "config",
        type(config).__name__,
        "a SparseCodingConfig",
    )
    check_tensor("x", x, "[n, d]", 2, None)
    n_atoms = config.n_atoms
    ok = x.shape[0] >= n_atoms and x.shape[1] >= 1
    require(ok, "x", x.shape, f"of at least n_atoms={n_atoms} rows and 1 column")
    if config.solver == "omp":
        check_int("SparseCodingConfig.l0", config.l0, 1, min(n_atoms, x.shape[1]))
    shape = (n_atoms, x.shape[1])
    ok = init is None or (isinstance(init, Tensor) and tuple(init.shape) == shape)
    shown = init.shape if isinstance(init, Tensor) else init
    require(ok, "init", shown, f"None or of shape [n_atoms, d] = {list(shape)}")
    return _fit_impl(x, config, init, progress)


def _fit_impl(x: Tensor, cfg: SparseCodingConfig, init: Tensor | None, progress: bool):
    g = torch.Generator().manual_seed(cfg.seed)
    if init is None:
        init = x[torch.randperm(len(x), generator=g)[: cfg.n_atoms].to(x.device)]
    D = F.normalize(init.to(x), dim=1)
    l1 = cfg.l1 or 0.0
    C = _codes(x, D, None, cfg)
    history, resampled = [lasso_objective(D, x, C, l1).double().mean()], []
    bar = progress_bar(progress, range(cfg.n_iter), desc="sparse coding")
    for _ in bar:
        D = _update_dictionary(x, C, D, cfg)
        D, C, n_new = _renormalise(x, C, D, g)
        C = _codes(x, D, C, cfg)
        history.append(lasso_objective(D, x, C, l1).double().mean())
        resampled.append(n_new)
        bar.set_postfix(objective=f"{history[-1].item():.4g}", refresh=False)
    return SparseCodingResult(D, C, torch.stack(history).cpu(), torch.tensor(resampled))


def _codes(x: Tensor, D: Tensor, previous: Tensor | None, cfg: SparseCodingConfig) -> Tensor:
    """Codes ``[n, n_atoms]`` from the solver, or ``previous`` per sample where it scores better."""
    kw = {"chunk_size": cfg.chunk_size}
    if cfg.solver != "omp":
        kw["nonneg"] = cfg.nonneg
    if cfg.solver in LASSO_SOLVERS:
        kw.update(max_iter=cfg.solver_max_iter, tol=cfg.solver_tol, init=previous)
        new = SOLVERS[cfg.solver](D, x, cfg.l1, **kw).codes
    else:
        new = SOLVERS[cfg.solver](D, x, cfg.l0, **kw).codes
    if previous is None:
        return new
    l1 = cfg.l1 or 0.0
    keep = lasso_objective(D, x, previous, l1) < lasso_objective(D, x, new, l1)  # [n]
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
