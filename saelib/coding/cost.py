"""Analytic FLOP counts of the ITO solvers, sparse coding and encoder fits (``saelib.coding``).

The convention and what is ignored are those of ``saelib.flops`` (a multiply-add is 2 FLOPs;
elementwise work, selection, gathers and the optimizer update are not counted). Besides the
products with a dictionary ``D [n_atoms, d]`` or atoms gathered from it (matrix-matrix,
matrix-vector, batched, and the single-atom operations ``<x, d_j>`` and ``r -= c_j d_j``,
``2 d`` each), dense solves count at their textbook cost (Golub & Van Loan): LU ``2 m^3 / 3``
to factor and ``2 m^2`` per right-hand side, a triangular solve ``m^2`` per right-hand side,
symmetric eigenvalues ``4 m^3 / 3`` (the tridiagonal reduction). tests/test_coding_cost.py
checks the matmul part against ``FlopCounterMode`` on ``saelib.coding``'s solvers,
``fit_dictionary`` and ``fit_encoder``.

A method's total is training plus inference, for example ``ito_setup_flops(solver, n_atoms,
d) + n_test * (ito_flops(...) + 2 * n_atoms * d)`` (the solver's codes, then their
reconstruction) against ``saelib.flops.training_flops(...) + n_test *
saelib.flops.sae_forward_flops(cfg)``.
"""

from __future__ import annotations

from saelib.coding.amortisation import SETTINGS
from saelib.coding.ito import LASSO_SOLVERS, SOLVERS
from saelib.coding.sparse_coding import DICT_UPDATES
from saelib.flops import check_config, encoder_matmuls, sae_decode_flops
from saelib.saes.config import SAEConfig
from saelib.validation import check_choice, check_int, require

__all__ = [
    "dictionary_update_flops",
    "encoder_fit_flops",
    "gradient_pursuit_flops",
    "ito_flops",
    "ito_setup_flops",
    "lasso_iter_flops",
    "matching_pursuit_flops",
    "omp_flops",
    "sparse_coding_flops",
]


def _third(numerator: int) -> int:
    """``numerator / 3`` rounded to the nearest integer (for the 2/3 and 4/3 of the solves)."""
    return (numerator + 1) // 3


# -- ITO solvers (saelib.coding.ito), per sample ----------------------------------------------
def lasso_iter_flops(n_atoms: int, d: int) -> int:
    """FLOPs of one ISTA or FISTA iteration for one sample: ``4 n_atoms d``.

    The gradient of ``||c D - x||^2 / 2`` is ``(c D - x) D^T``: one product with ``D``
    (``2 n_atoms d``) and one with ``D^T`` (``2 n_atoms d``); FISTA takes it at the
    extrapolated point, so an iteration costs the same. Ignored: the step and the
    soft-threshold, FISTA's momentum and restart test (elementwise on ``n_atoms`` entries),
    the convergence test, the bias.
    """
    n_atoms, d = check_int("n_atoms", n_atoms, 1), check_int("d", d, 1)
    return 4 * n_atoms * d


def omp_flops(n_atoms: int, d: int, l0: int) -> int:
    """FLOPs of ``saelib.coding.ito.omp`` to ``l0`` atoms, for one sample (codes only).

    Step ``t = 1..l0``: correlation ``r D^T`` (``2 n_atoms d``), argmax (ignored), the new
    atom's Gram column against the ``t - 1`` chosen ones (``2 (t - 1) d``), the Cholesky
    factor grown by one row with a triangular solve of size ``t - 1`` (``(t - 1)^2``), the
    right-hand side ``<x, d_j>`` (``2 d``), the refit by ``cholesky_solve`` of size ``t``
    (``2 t^2``), and the residual ``x - c_S D_S`` (``2 t d``). Summed: ``2 n_atoms d l0 +
    2 d l0 (l0 + 1) + (l0 - 1) l0 (2 l0 - 1) / 6 + l0 (l0 + 1) (2 l0 + 1) / 3``. ``l0`` is in
    ``[1, min(n_atoms, d)]``, as ``ito.omp`` requires.
    """
    n_atoms, d = check_int("n_atoms", n_atoms, 1), check_int("d", d, 1)
    l0 = check_int("l0", l0, 1, min(n_atoms, d))
    triangular = (l0 - 1) * l0 * (2 * l0 - 1) // 6  # sum_t (t - 1)^2
    refits = l0 * (l0 + 1) * (2 * l0 + 1) // 3  # sum_t 2 t^2
    return 2 * n_atoms * d * l0 + 2 * d * l0 * (l0 + 1) + triangular + refits


def gradient_pursuit_flops(n_atoms: int, d: int, l0: int) -> int:
    """FLOPs of ``saelib.coding.ito.gradient_pursuit`` to ``l0`` atoms, for one sample (codes only).

    Step ``t = 1..l0``: correlation ``g = r D^T`` (``2 n_atoms d``; gathered on the support
    it is the descent direction), argmax (ignored), the direction in signal space
    ``g_S D_S`` (``2 t d``), whose squared norm gives the exact line-search step; the
    residual and code updates are axpys (ignored). Summed: ``2 n_atoms d l0 + d l0 (l0 + 1)``.
    Not counted: with ``nonneg=True``, a step whose clamp at 0 bites (in any row of the
    chunk) decodes the clamped move once more (``2 t d``) for its segment line search, so
    the worst case is ``2 n_atoms d l0 + 2 d l0 (l0 + 1)``. ``l0`` is in ``[1, n_atoms]``.
    """
    n_atoms, d = check_int("n_atoms", n_atoms, 1), check_int("d", d, 1)
    l0 = check_int("l0", l0, 1, n_atoms)
    return 2 * n_atoms * d * l0 + d * l0 * (l0 + 1)


def matching_pursuit_flops(n_atoms: int, d: int, l0: int) -> int:
    """FLOPs of ``l0`` matching-pursuit steps for one sample: ``l0 (2 n_atoms d + 2 d)``.

    Step: correlation ``r D^T`` (``2 n_atoms d``), argmax (ignored), code update (one
    entry, ignored), residual ``r -= c_j d_j`` (``2 d``, the rank-one update with the atom).
    An atom may be chosen twice, so ``l0`` (the number of steps) is any integer ``>= 1``.
    """
    n_atoms, d = check_int("n_atoms", n_atoms, 1), check_int("d", d, 1)
    l0 = check_int("l0", l0, 1)
    return l0 * (2 * n_atoms * d + 2 * d)


PURSUIT_FLOPS = {
    "omp": omp_flops,
    "gradient_pursuit": gradient_pursuit_flops,
    "matching_pursuit": matching_pursuit_flops,
}
"""The FLOP count of each of ``saelib.coding.pursuit.PURSUIT_SOLVERS`` (the same keys)."""


def ito_flops(
    solver: str, n_atoms: int, d: int, *, n_iter: int | None = None, l0: int | None = None
) -> int:
    """FLOPs for one sample's codes from the ITO solver named ``solver`` (one of ``SOLVERS``).

    ista and fista take ``n_iter`` (the iterations run: ``ITOResult.n_iter``, the most over
    chunks, so an upper bound; at most ``max_iter``) and return ``n_iter`` times the
    per-iteration count; omp, gradient_pursuit and matching_pursuit take ``l0`` and return
    their totals. Not included: the one-off cost per call (``ito_setup_flops``) and the
    reconstruction ``x_hat = c D + bias`` that every ``ITOResult`` carries (``2 n_atoms d``,
    dense).
    """
    check_choice("solver", solver, SOLVERS)
    if solver in LASSO_SOLVERS:
        require(l0 is None, "l0", l0, f"None for solver {solver!r} (it takes n_iter)")
        n_iter = check_int("n_iter", n_iter, 1)
        return n_iter * lasso_iter_flops(n_atoms, d)
    require(n_iter is None, "n_iter", n_iter, f"None for solver {solver!r} (it takes l0)")
    return PURSUIT_FLOPS[solver](n_atoms, d, l0)


def ito_setup_flops(solver: str, n_atoms: int, d: int) -> int:
    """FLOPs a solver call spends once on its dictionary, whatever the batch size.

    ista, fista: the step size ``1 / ||D||_2^2``, the largest eigenvalue of the smaller Gram
    matrix (``m = min(n_atoms, d)``): ``2 n_atoms d m`` to form it, ``4 m^3 / 3`` for the
    symmetric eigensolve, rounded. omp, gradient_pursuit, matching_pursuit: 0 (they only
    take the atoms' norms, an elementwise pass).
    """
    check_choice("solver", solver, SOLVERS)
    n_atoms, d = check_int("n_atoms", n_atoms, 1), check_int("d", d, 1)
    if solver in LASSO_SOLVERS:
        m = min(n_atoms, d)
        return 2 * n_atoms * d * m + _third(4 * m**3)
    return 0


# -- dictionary learning (saelib.coding.sparse_coding) ---------------------------------------------
def dictionary_update_flops(
    n_atoms: int, d: int, n_samples: int, method: str = "lstsq", *, grad_steps: int = 10
) -> int:
    """FLOPs of one dictionary update from codes ``C [n_samples, n_atoms]`` (stored dense).

    Both methods form ``C^T C`` (``2 n_samples n_atoms^2``) and ``C^T X``
    (``2 n_samples n_atoms d``). lstsq then solves ``(C^T C + lam I) D = C^T X`` by LU
    with ``d`` right-hand sides (``2 n_atoms^3 / 3 + 2 n_atoms^2 d``); gradient takes the
    step size from the eigenvalues of ``C^T C`` (``4 n_atoms^3 / 3``) and ``grad_steps``
    steps ``D -= (C^T C D - C^T X) / L`` (``2 n_atoms^2 d`` each). Cubic terms rounded.
    Ignored: the ridge, renormalising the atoms.
    """
    n_atoms, d = check_int("n_atoms", n_atoms, 1), check_int("d", d, 1)
    n_samples = check_int("n_samples", n_samples, 1)
    check_choice("method", method, DICT_UPDATES)
    grad_steps = check_int("grad_steps", grad_steps, 1)
    normal_equations = 2 * n_samples * n_atoms**2 + 2 * n_samples * n_atoms * d
    if method == "gradient":
        return normal_equations + _third(4 * n_atoms**3) + grad_steps * 2 * n_atoms**2 * d
    return normal_equations + _third(2 * n_atoms**3) + 2 * n_atoms**2 * d


def sparse_coding_flops(
    n_atoms: int,
    d: int,
    n_samples: int,
    n_outer: int,
    solver: str,
    *,
    n_iter: int | None = None,
    l0: int | None = None,
    dict_update: str = "lstsq",
    grad_steps: int = 10,
) -> int:
    """FLOPs of ``saelib.coding.sparse_coding.fit_dictionary`` with ``n_outer`` rounds.

    ``n_outer`` is the config's ``n_iter``.

    A code step is one solver call on all samples: ``ito_setup_flops + n_samples *
    (ito_flops + 2 n_atoms d)`` (codes, and the ``x_hat`` the solver returns). An objective
    evaluation costs ``n_samples * 2 n_atoms d`` (``C D``). fit_dictionary runs one code
    step and one objective first, then per round a dictionary update
    (``dictionary_update_flops``), a code step, two objectives (keep the better of old and
    new codes per sample) and one for the history. For ista and fista, ``n_iter`` is the
    iterations per code step (``solver_max_iter`` for an upper bound).
    """
    n_samples = check_int("n_samples", n_samples, 1)
    n_outer = check_int("n_outer", n_outer, 1)
    per_sample = ito_flops(solver, n_atoms, d, n_iter=n_iter, l0=l0) + 2 * n_atoms * d
    code_step = ito_setup_flops(solver, n_atoms, d) + n_samples * per_sample
    objective = n_samples * 2 * n_atoms * d
    update = dictionary_update_flops(n_atoms, d, n_samples, dict_update, grad_steps=grad_steps)
    return code_step + objective + n_outer * (update + code_step + 3 * objective)


# -- encoder-only fits (saelib.coding.amortisation) ------------------------------------------------
def encoder_fit_flops(cfg: SAEConfig, n_steps: int, batch_size: int, setting: str) -> int:
    """FLOPs of ``saelib.coding.amortisation.fit_encoder``: ``n_steps`` steps, ``batch_size`` rows.

    Per sample, the encoder's matmuls cost 3x forward (forward, gradient for the weight and
    for the input), except those applied to ``x - b_dec``, which cost 2x (the input is data
    and ``b_dec`` is frozen: no input gradient). ``known_dictionary`` (the SAE's own loss)
    adds the dense decode through the frozen dictionary at 2x (forward and the gradient with
    respect to ``f``), twice for Gated (its auxiliary reconstruction); ``known_codes`` never
    decodes. LISTA's steps decode through the frozen dictionary (``z_t @ W_dec``, 2x: no
    gradient for the dictionary) and multiply by their own ``W_steps[t]`` (3x). Ignored: the
    losses, elementwise work, the Adam update.
    """
    cfg = check_config(cfg)
    n_steps, batch_size = check_int("n_steps", n_steps, 1), check_int("batch_size", batch_size, 1)
    check_choice("setting", setting, SETTINGS)
    matmuls = encoder_matmuls(cfg)
    n_input_products = 2 if cfg.architecture == "gated" else 1
    frozen = set(range(1, len(matmuls), 2)) if cfg.architecture == "lista" else set()
    per_sample = sum(
        (2 if i < n_input_products or i in frozen else 3) * 2 * fan_in * fan_out
        for i, (fan_in, fan_out) in enumerate(matmuls)
    )
    if setting == "known_dictionary":
        per_sample += (4 if cfg.architecture == "gated" else 2) * sae_decode_flops(cfg)
    return n_steps * batch_size * per_sample
