"""FLOPs of saelib.coding (ITO, sparse coding): hand-computed, torch's counter, validation."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from saelib.coding import cost, ito, sparse_coding
from saelib.coding.pursuit import PURSUIT_SOLVERS

BATCH = 16


def counted(fn) -> int:
    """FLOPs that torch's counter sees while ``fn`` runs (matmuls, 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_pursuit_flops_cover_exactly_the_pursuit_solvers():
    assert list(cost.PURSUIT_FLOPS) == list(PURSUIT_SOLVERS)
    assert set(ito.SOLVERS) == set(ito.LASSO_SOLVERS) | set(PURSUIT_SOLVERS)


# -- hand-computed ------------------------------------------------------------------------------
def test_solvers_hand_computed():
    n, d = 10, 5
    assert cost.lasso_iter_flops(n, d) == 4 * 10 * 5
    # omp: step t: correlation 2nd = 100, Gram column 2(t-1)d, <x, d_j> 2d, residual 2td,
    # triangular solve (t-1)^2, refit 2t^2
    assert cost.omp_flops(n, d, 1) == (100 + 0 + 10 + 10) + (0 + 2)
    assert cost.omp_flops(n, d, 2) == 122 + (100 + 10 + 10 + 20) + (1 + 8)
    assert cost.gradient_pursuit_flops(n, d, 2) == (100 + 10) + (100 + 20)
    assert cost.matching_pursuit_flops(n, d, 2) == 2 * (100 + 10)
    assert cost.ito_setup_flops("ista", n, d) == 2 * 10 * 5 * 5 + 167  # 4 * 125 / 3
    assert cost.ito_setup_flops("fista", n, d) == 667
    for solver in PURSUIT_SOLVERS:
        assert cost.ito_setup_flops(solver, n, d) == 0


def omp_not_matmul(l0: int, d: int) -> int:
    """OMP's terms that torch does not count as matmuls: <x, d_j> and the solves."""
    return sum(2 * d + (t - 1) ** 2 + 2 * t**2 for t in range(1, l0 + 1))


@pytest.mark.parametrize("l0", [1, 2, 3, 7, 20])
def test_omp_closed_form_matches_step_by_step_sum(l0):
    n, d = 50, 30
    # correlation, Gram column, <x, d_j>, residual; triangular solve, refit
    steps = [
        2 * n * d + 2 * (t - 1) * d + 2 * d + 2 * t * d + (t - 1) ** 2 + 2 * t**2
        for t in range(1, l0 + 1)
    ]
    assert cost.omp_flops(n, d, l0) == sum(steps)


def test_ito_dispatcher_matches_each_solver():
    n, d = 12, 6
    assert cost.ito_flops("ista", n, d, n_iter=7) == 7 * cost.lasso_iter_flops(n, d)
    assert cost.ito_flops("fista", n, d, n_iter=7) == 7 * cost.lasso_iter_flops(n, d)
    assert cost.ito_flops("omp", n, d, l0=4) == cost.omp_flops(n, d, 4)
    assert cost.ito_flops("gradient_pursuit", n, d, l0=4) == cost.gradient_pursuit_flops(n, d, 4)
    assert cost.ito_flops("matching_pursuit", n, d, l0=4) == cost.matching_pursuit_flops(n, d, 4)


def test_dictionary_update_and_sparse_coding_hand_computed():
    n, d, N = 10, 5, 20
    normal = 2 * N * n**2 + 2 * N * n * d  # C^T C, C^T X
    assert cost.dictionary_update_flops(n, d, N) == normal + 667 + 2 * n**2 * d == 7667
    gradient = normal + 1333 + 3 * 2 * n**2 * d  # eigenvalues 4 * 1000 / 3, three steps
    assert cost.dictionary_update_flops(n, d, N, "gradient", grad_steps=3) == gradient
    code_step, objective = N * (271 + 100), N * 100  # omp codes + x_hat; C @ D
    total = code_step + objective + 3 * (7667 + code_step + 3 * objective)
    assert cost.sparse_coding_flops(n, d, N, 3, "omp", l0=2) == total


# -- against torch's own counter ----------------------------------------------------------------
def test_ista_iteration_matches_torch_counter():
    """The per-iteration count of a reference ISTA step, (c D - x) D^T, on a batch."""
    n, d = 12, 7
    D, x, c = torch.randn(n, d), torch.randn(BATCH, d), torch.randn(BATCH, n)
    assert counted(lambda: (c @ D - x) @ D.T) == BATCH * cost.lasso_iter_flops(n, d)


def problem(n_atoms=12, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_atoms, d, generator=g, dtype=torch.float64)
    return D / D.norm(dim=1, keepdim=True), torch.randn(BATCH, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("solver", ["ista", "fista"])
def test_ista_fista_match_torch_counter_on_saelib_ito(solver):
    D, x = problem()
    n, d = D.shape
    res = []
    total = counted(lambda: res.append(ito.SOLVERS[solver](D, x, 0.05, max_iter=6, tol=0.0)))
    setup_matmul = 2 * n * d * min(n, d)  # the Gram matrix; its eigvalsh is not a matmul
    per_sample = cost.ito_flops(solver, n, d, n_iter=res[0].n_iter) + 2 * n * d  # + x_hat
    assert total == setup_matmul + BATCH * per_sample
    assert cost.ito_setup_flops(solver, n, d) > setup_matmul


@pytest.mark.parametrize("l0", [1, 3, 5])
def test_pursuits_match_torch_counter_on_saelib_ito(l0):
    D, x = problem()
    n, d = D.shape
    x_hat = 2 * n * d
    omp = counted(lambda: ito.omp(D, x, l0))
    assert omp == BATCH * (cost.omp_flops(n, d, l0) - omp_not_matmul(l0, d) + x_hat)
    gp = counted(lambda: ito.gradient_pursuit(D, x, l0, nonneg=False))
    assert gp == BATCH * (cost.gradient_pursuit_flops(n, d, l0) + x_hat)
    mp = counted(lambda: ito.matching_pursuit(D, x, l0))  # its rank-one update is elementwise
    assert mp == BATCH * (cost.matching_pursuit_flops(n, d, l0) - l0 * 2 * d + x_hat)
    # non-negative gradient pursuit: one more product on the steps where the clamp bites
    gp_nonneg = counted(lambda: ito.gradient_pursuit(D, x, l0, nonneg=True))
    base = BATCH * (cost.gradient_pursuit_flops(n, d, l0) + x_hat)
    assert base <= gp_nonneg <= base + BATCH * d * l0 * (l0 + 1)


@pytest.mark.parametrize(
    "solver, dict_update", [("omp", "lstsq"), ("matching_pursuit", "gradient"), ("ista", "lstsq")]
)
def test_sparse_coding_matches_torch_counter_on_fit_dictionary(solver, dict_update):
    n, d, N, n_outer, l0, n_iter, grad_steps = 8, 6, 40, 2, 2, 3, 4
    x = torch.randn(N, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kw = {"l1": 0.05, "solver_max_iter": n_iter, "solver_tol": 1e-300}
    kw = kw if solver == "ista" else {"l0": l0}
    cfg = sparse_coding.SparseCodingConfig(
        n_atoms=n,
        solver=solver,
        n_iter=n_outer,
        dict_update=dict_update,
        grad_steps=grad_steps,
        **kw,
    )
    total = counted(lambda: sparse_coding.fit_dictionary(x, cfg))
    solver_kw = {"n_iter": n_iter} if solver == "ista" else {"l0": l0}
    expected = cost.sparse_coding_flops(
        n, d, N, n_outer, solver, dict_update=dict_update, grad_steps=grad_steps, **solver_kw
    )
    # subtract what torch does not count as a matmul: solves, eigensolves, MP's rank-one update
    code_steps = n_outer + 1
    if solver == "omp":
        expected -= code_steps * N * omp_not_matmul(l0, d)
    if solver == "matching_pursuit":
        expected -= code_steps * N * l0 * 2 * d
    if solver == "ista":
        expected -= code_steps * ((4 * min(n, d) ** 3 + 1) // 3)
    if dict_update == "lstsq":
        expected -= n_outer * ((2 * n**3 + 1) // 3 + 2 * n**2 * d)
    else:
        expected -= n_outer * ((4 * n**3 + 1) // 3)
    assert total == expected


# -- monotonicity -------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", list(ito.SOLVERS))
def test_solver_flops_grow_with_atoms_dimension_and_steps(solver):
    key = "n_iter" if solver in ito.LASSO_SOLVERS else "l0"

    def per_sample(n, d, steps):
        return cost.ito_flops(solver, n, d, **{key: steps})

    assert per_sample(16, 8, 3) < per_sample(32, 8, 3) < per_sample(32, 16, 3)
    assert per_sample(32, 16, 3) < per_sample(32, 16, 4)
    assert cost.sparse_coding_flops(16, 8, 10, 2, solver, **{key: 3}) < (
        cost.sparse_coding_flops(16, 8, 10, 3, solver, **{key: 3})
    )


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cost.lasso_iter_flops(0, 5), "n_atoms must be an integer >= 1, got 0"),
        (lambda: cost.lasso_iter_flops(4, 2.0), "d must be an integer >= 1, got 2.0"),
        (lambda: cost.lasso_iter_flops(True, 5), "n_atoms must be an integer >= 1, got True"),
        (lambda: cost.omp_flops(10, 5, 6), r"l0 must be an integer in \[1, 5\], got 6"),
        (lambda: cost.omp_flops(10, 5, 0), r"l0 must be an integer in \[1, 5\]"),
        (lambda: cost.gradient_pursuit_flops(4, 8, 5), r"l0 must be an integer in \[1, 4\]"),
        (lambda: cost.matching_pursuit_flops(4, 8, 0), "l0 must be an integer >= 1"),
        (lambda: cost.ito_flops("lars", 4, 8, l0=2), r"solver must be one of \['ista', 'fista'"),
        (lambda: cost.ito_flops("ista", 4, 8), "n_iter must be an integer >= 1, got None"),
        (
            lambda: cost.ito_flops("fista", 4, 8, n_iter=3, l0=2),
            r"l0 must be None for solver 'fista' \(it takes n_iter\)",
        ),
        (
            lambda: cost.ito_flops("omp", 4, 8, n_iter=3, l0=2),
            r"n_iter must be None for solver 'omp' \(it takes l0\)",
        ),
        (lambda: cost.ito_flops("omp", 4, 8), r"l0 must be an integer in \[1, 4\], got None"),
        (lambda: cost.ito_setup_flops("svd", 4, 8), "solver must be one of"),
        (lambda: cost.dictionary_update_flops(4, 8, 0), "n_samples must be an integer >= 1"),
        (lambda: cost.dictionary_update_flops(4, 8, 2, "ksvd"), "method must be one of"),
        (lambda: cost.dictionary_update_flops(4, 8, 2, grad_steps=0), "grad_steps must be"),
        (lambda: cost.sparse_coding_flops(4, 8, 2, 0, "omp", l0=1), "n_outer must be an"),
        (lambda: cost.sparse_coding_flops(4, 8, 2, 1, "omp", l0=1, dict_update="x"), "method"),
    ],
)
def test_invalid_inputs_raise_with_the_parameter_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
