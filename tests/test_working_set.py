"""Tests for saelib.coding.working_set: the lasso by working sets against scikit-learn's Lasso
(float64, tight tolerance), FISTA, the optimality conditions, and its argument checks."""

import numpy as np
import pytest
import torch
from test_ito import gaussian, scaled_rows, sklearn_lasso, unit_rows

from saelib.coding.lasso import fista, lasso_objective
from saelib.coding.working_set import lasso_working_set

pytestmark = pytest.mark.usefixtures("one_thread")


def planted(n_atoms, d, n, l0, seed, dtype=torch.float64):
    """Unit atoms and signals of ``l0`` non-negative atoms each: sparse optima."""
    g = torch.Generator().manual_seed(seed)
    D = unit_rows(n_atoms, d, seed, dtype)
    codes = torch.zeros(n, n_atoms, dtype=dtype)
    for row in codes:
        atoms = torch.randperm(n_atoms, generator=g)[:l0]
        row[atoms] = torch.rand(l0, generator=g, dtype=dtype) + 0.5
    return D, codes @ D


@pytest.mark.parametrize("nonneg", [False, True])
def test_matches_sklearn_lasso(nonneg):
    # Dense-ish optima (Gaussian signals) and atoms of unequal norms as well as sparse ones.
    problems = [(unit_rows(40, 20, 0), gaussian((5, 20), 10)),
                (scaled_rows(30, 15, 1), gaussian((5, 15), 11)),
                planted(200, 40, 6, 4, 2)]  # fmt: skip
    for D, x in problems:
        l1 = 0.4
        res = lasso_working_set(D, x, l1, nonneg=nonneg, tol=1e-8, inner_tol=1e-12)
        ref = torch.from_numpy(sklearn_lasso(D, x, l1, nonneg))
        ours, theirs = lasso_objective(D, x, res.codes, l1), lasso_objective(D, x, ref, l1)
        assert res.converged.all()
        assert ((ours - theirs) / theirs).max() < 1e-8
        np.testing.assert_allclose(res.codes.numpy(), ref.numpy(), atol=1e-6)
        if nonneg:
            assert (res.codes >= 0).all()


def test_optimality_conditions_hold():
    D, x = planted(300, 50, 16, 6, 3)
    l1 = 0.05
    res = lasso_working_set(D, x, l1, tol=1e-6)
    grad = (res.codes @ D - x) @ D.T
    active = res.codes != 0
    # Active atoms: grad = -l1 sign(c); inactive atoms: |grad| <= l1 (both within tol * l1).
    assert (grad[active] + l1 * res.codes[active].sign()).abs().max() <= 1e-6 * l1
    assert grad[~active].abs().max() <= l1 * (1 + 1e-6)
    assert 0 < active.sum(1).min() and active.sum(1).max() < 300


def test_agrees_with_fista_in_float32_and_uses_few_passes():
    D, x = planted(512, 64, 64, 8, 4, dtype=torch.float32)
    l1 = 0.05
    ws = lasso_working_set(D, x, l1, nonneg=True)
    fi = fista(D, x, l1, nonneg=True, tol=1e-7, max_iter=20000)
    ours, theirs = lasso_objective(D, x, ws.codes, l1), lasso_objective(D, x, fi.codes, l1)
    assert ((ours - theirs) / theirs).abs().max() < 1e-5
    assert ws.converged.all() and ws.n_iter <= 10


def test_without_the_full_gram_and_in_chunks_gives_the_same_codes():
    D, x = planted(120, 30, 10, 5, 5)
    base = lasso_working_set(D, x, 0.1, tol=1e-9, inner_tol=1e-12)
    other = lasso_working_set(D, x, 0.1, tol=1e-9, inner_tol=1e-12, max_gram_atoms=50,
                              chunk_size=3)  # fmt: skip
    np.testing.assert_allclose(other.codes.numpy(), base.codes.numpy(), atol=1e-9)


def test_bias_and_warm_start():
    D, x = planted(100, 25, 6, 4, 6)
    bias = gaussian((25,), 7)
    res = lasso_working_set(D, x + bias, 0.1, bias=bias, tol=1e-9, inner_tol=1e-12)
    plain = lasso_working_set(D, x, 0.1, tol=1e-9, inner_tol=1e-12)
    np.testing.assert_allclose(res.codes.numpy(), plain.codes.numpy(), atol=1e-9)
    np.testing.assert_allclose(res.x_hat.numpy(), (plain.x_hat + bias).numpy(), atol=1e-9)
    # Started at the solution, no working-set pass is needed.
    again = lasso_working_set(D, x, 0.1, tol=1e-6, init=plain.codes)
    assert again.n_iter == 0 and again.converged.all()


def test_max_outer_reports_unconverged_samples():
    D, x = planted(300, 50, 8, 12, 8)
    res = lasso_working_set(D, x, 0.01, max_outer=1, min_working_set=2, tol=1e-8)
    assert res.n_iter == 1 and not res.converged.all()


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(l1=0.0), "l1"), (dict(l1=-1.0), "l1"), (dict(tol=-1.0), "tol"),
     (dict(max_outer=0), "max_outer"), (dict(min_working_set=0), "min_working_set"),
     (dict(nonneg=1), "nonneg"), (dict(init=torch.zeros(3, 7, dtype=torch.float64)), "init"),
     (dict(nonneg=True, init=-torch.ones(4, 10, dtype=torch.float64)), "init")],
)  # fmt: skip
def test_bad_arguments_name_the_parameter(kwargs, match):
    D, x = unit_rows(10, 5, 0), gaussian((4, 5), 1)
    kwargs = dict(l1=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        lasso_working_set(D, x, **kwargs)
