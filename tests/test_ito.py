"""Tests for saelib.coding.ito: solvers vs scikit-learn and closed forms, invariants, errors."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import sparse_encode
from sklearn.linear_model import Lasso, OrthogonalMatchingPursuit

from saelib.coding import ito
from saelib.saes import SAEConfig, make_sae
from saelib.toys.synthetic import random_dictionary

PURSUITS = ["omp", "gradient_pursuit", "matching_pursuit"]
LASSOS = ["ista", "fista"]


pytestmark = pytest.mark.usefixtures("one_thread")


def unit_rows(n, d, seed, dtype=torch.float64):
    D = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return D / D.norm(dim=1, keepdim=True)


def scaled_rows(n, d, seed):
    """Atoms of norms in [0.5, 2]: the solvers must not assume unit norms."""
    g = torch.Generator().manual_seed(seed)
    return unit_rows(n, d, seed) * (0.5 + 1.5 * torch.rand(n, 1, generator=g, dtype=torch.float64))


def close(actual, expected, atol=1e-7):
    """Element-wise comparison via numpy (torch.testing's first call imports ~1.5 s of modules)."""
    np.testing.assert_allclose(
        np.asarray(actual.cpu(), dtype=np.float64), np.asarray(expected.cpu()), rtol=0, atol=atol
    )


def gaussian(shape, seed, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def solve(name, D, x, **kw):
    """Run solver ``name`` with a default budget: l1 = 0.3 for the lasso, l0 = 5 for pursuits."""
    if name in LASSOS:
        return ito.SOLVERS[name](D, x, kw.pop("l1", 0.3), **kw)
    return ito.SOLVERS[name](D, x, kw.pop("l0", 5), **kw)


def sklearn_lasso(D, x, l1, positive):
    """scikit-learn's lasso per signal, with its 1/(2 n_samples) scaling: alpha = l1 / d."""
    d = D.shape[1]
    model = Lasso(alpha=l1 / d, fit_intercept=False, tol=1e-10, max_iter=100000, positive=positive)
    return np.stack([model.fit(D.T.numpy(), row).coef_.copy() for row in x.numpy()])


# ---------------------------------------------------------------- ISTA / FISTA


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("name", LASSOS)
def test_lasso_reaches_sklearn_objective(name, nonneg):
    # Two dictionaries: unit atoms, and atoms of other norms (L = ||D||_2^2 differs).
    for seed, D in [(0, unit_rows(40, 20, 0)), (1, scaled_rows(30, 15, 1))]:
        x = gaussian((4, D.shape[1]), 10 + seed)
        l1 = 0.4
        res = ito.SOLVERS[name](D, x, l1, nonneg=nonneg, tol=1e-9, max_iter=100000)
        ref = torch.from_numpy(sklearn_lasso(D, x, l1, nonneg))
        ours, theirs = ito.lasso_objective(D, x, res.codes, l1), ito.lasso_objective(D, x, ref, l1)
        assert res.converged.all()
        assert ((ours - theirs) / theirs).max() < 1e-6
        np.testing.assert_allclose(res.codes.numpy(), ref.numpy(), atol=1e-5)
        assert 0 < (res.codes != 0).sum(1).min() and (res.codes != 0).sum(1).max() < D.shape[0]
        if nonneg:
            assert (res.codes >= 0).all()


def test_fista_needs_fewer_iterations_than_ista():
    D, x = unit_rows(40, 20, 2), gaussian((8, 20), 3)
    n_ista = ito.ista(D, x, 0.3, tol=1e-8, max_iter=20000).n_iter
    n_fista = ito.fista(D, x, 0.3, tol=1e-8, max_iter=20000).n_iter
    n_plain = ito.fista(D, x, 0.3, tol=1e-8, max_iter=20000, restart=False).n_iter
    assert n_fista < n_ista and n_plain < n_ista, (n_fista, n_plain, n_ista)


def test_ista_objective_is_monotone_and_history_matches():
    D, x = gaussian((30, 12), 4), gaussian((5, 12), 5)
    res = ito.ista(D, x, 0.2, max_iter=300, tol=0, return_history=True)
    h = res.history  # [n_iter + 1, batch]
    assert h.shape == (301, 5) and res.n_iter == 300
    assert (h.diff(dim=0) <= 1e-12 * h[:-1]).all()  # a 1/L step never increases the objective
    close(h[0], 0.5 * x.pow(2).sum(1))
    close(h[-1], ito.lasso_objective(D, x, res.codes, 0.2))


@pytest.mark.parametrize("name", LASSOS)
def test_lasso_is_zero_above_the_critical_l1(name):
    # c = 0 is optimal iff ||D x||_inf <= l1 (the subgradient condition at 0).
    D, x = unit_rows(20, 10, 6), gaussian((3, 10), 7)
    critical = (x @ D.T).abs().max().item()
    assert (solve(name, D, x, l1=critical * 1.001).codes == 0).all()
    assert (solve(name, D, x, l1=critical * 0.9).codes != 0).any()


def test_lasso_warm_start_and_stopping():
    D, x = unit_rows(40, 20, 8), gaussian((4, 20), 9)
    cold = ito.fista(D, x, 0.3, tol=1e-9, max_iter=5000)
    warm = ito.fista(D, x, 0.3, tol=1e-9, max_iter=5000, init=cold.codes)
    assert warm.n_iter < cold.n_iter
    capped = ito.fista(D, x, 0.3, tol=0, max_iter=3)
    assert capped.n_iter == 3 and not capped.converged.any()


# ---------------------------------------------------------------- OMP against scikit-learn


@pytest.mark.parametrize("l0", [1, 4, 12])
def test_omp_matches_sklearn(l0):
    D, x = unit_rows(50, 25, 10 + l0), gaussian((6, 25), 20 + l0)
    res = ito.omp(D, x, l0)
    model = OrthogonalMatchingPursuit(n_nonzero_coefs=l0, fit_intercept=False)
    ref = np.stack([model.fit(D.T.numpy(), row).coef_.copy() for row in x.numpy()])
    encoded = sparse_encode(x.numpy(), D.numpy(), algorithm="omp", n_nonzero_coefs=l0)
    for theirs in (ref, encoded):
        np.testing.assert_array_equal(res.codes.numpy() != 0, theirs != 0)
        np.testing.assert_allclose(res.codes.numpy(), theirs, atol=1e-10)
    assert set(res.support[0].tolist()) == set(np.flatnonzero(ref[0]).tolist())


def test_omp_recovers_planted_supports():
    # 64 random unit atoms in 32-d, 3-sparse codes of magnitude >= 0.5: OMP finds the support.
    g = torch.Generator().manual_seed(11)
    D, n = unit_rows(64, 32, 11), 200
    support = torch.stack([torch.randperm(64, generator=g)[:3] for _ in range(n)])
    mags = (0.5 + torch.rand(n, 3, generator=g, dtype=torch.float64)) * torch.where(
        torch.rand(n, 3, generator=g) < 0.5, -1.0, 1.0
    ).double()
    codes = torch.zeros(n, 64, dtype=torch.float64).scatter_(1, support, mags)
    res = ito.omp(D, codes @ D, 3)
    exact = ((res.codes != 0) == (codes != 0)).all(1)
    assert exact.double().mean() >= 0.9
    close(res.codes[exact], codes[exact])


def test_omp_stops_adding_atoms_at_a_zero_residual():
    D = unit_rows(30, 20, 12)
    x = torch.stack([1.5 * D[3] - 0.7 * D[17], torch.zeros(20, dtype=torch.float64)])
    res = ito.omp(D, x, 6)
    expected = torch.zeros(2, 30, dtype=torch.float64)
    expected[0, 3], expected[0, 17] = 1.5, -0.7
    close(res.codes, expected)
    assert ((res.codes != 0).sum(1) == torch.tensor([2, 0])).all()


def test_omp_on_a_rank_deficient_dictionary():
    # 12 atoms spanning a 3-d subspace of R^6: after 3 atoms every further one is linearly
    # dependent on the support, gets coefficient 0, and x_hat is the projection of x.
    basis, _ = torch.linalg.qr(gaussian((6, 3), 42))  # [6, 3], orthonormal columns
    D = torch.nn.functional.normalize(gaussian((12, 3), 43) @ basis.T, dim=1)
    x = gaussian((5, 6), 44)
    res = ito.omp(D, x, 6)
    assert torch.isfinite(res.codes).all() and ((res.codes != 0).sum(1) == 3).all()
    close(res.x_hat, x @ basis @ basis.T, atol=1e-10)


# ---------------------------------------------------------------- pursuit invariants


def in_support(res):
    """Mask ``[batch, n_atoms]`` of the atoms listed in ``res.support``."""
    return torch.zeros_like(res.codes, dtype=torch.bool).scatter(1, res.support, True)


def test_fixed_l0_counts():
    D, x, l0 = unit_rows(48, 24, 13), gaussian((20, 24), 14), 7
    res = ito.omp(D, x, l0)
    assert ((res.codes != 0).sum(1) == l0).all() and (in_support(res).sum(1) == l0).all()
    for nonneg in (False, True):
        res = ito.gradient_pursuit(D, x, l0, nonneg=nonneg)
        assert (in_support(res).sum(1) == l0).all()  # l0 distinct atoms selected
        assert not ((res.codes != 0) & ~in_support(res)).any()
        nnz = (res.codes != 0).sum(1)
        assert (nnz == l0).all() if not nonneg else (nnz <= l0).all()
        res = ito.matching_pursuit(D, x, l0, nonneg=nonneg)
        assert ((res.codes != 0).sum(1) <= l0).all() and not (
            (res.codes != 0) & ~in_support(res)
        ).any()


@pytest.mark.parametrize("name", PURSUITS)
def test_zero_atoms_get_no_code(name):
    D, x = unit_rows(30, 15, 40), gaussian((6, 15), 41)
    D_zero = torch.cat([D[:10], torch.zeros(2, 15, dtype=torch.float64), D[10:]])
    kw = {} if name == "omp" else {"nonneg": False}
    a, b = solve(name, D, x, **kw), solve(name, D_zero, x, **kw)
    assert (b.codes[:, 10:12] == 0).all() and torch.isfinite(b.codes).all()
    close(torch.cat([b.codes[:, :10], b.codes[:, 12:]], dim=1), a.codes)


def coherent_rows(n, d, seed):
    """Unit atoms with expected pairwise cosine 0.3 (saelib.toys.synthetic.random_dictionary)."""
    return random_dictionary(n, d, coherence=0.3, generator=seed).double()


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("name", ["gradient_pursuit", "matching_pursuit"])
def test_pursuit_residual_never_increases(name, nonneg):
    # On coherent dictionaries the plain clamp of gradient pursuit (DeepMind's update)
    # increases the residual on 10-30% of samples (measured; see the test below). Keeping
    # zero coefficients out of the step cuts that to ~0.1% (3 of these 2000 samples on the
    # first dictionary), and the segment line search to none.
    cases = [
        (coherent_rows(128, 16, 0), 100),
        (unit_rows(32, 32, 16), 17),
        (unit_rows(80, 20, 17), 18),
    ]
    for D, seed in cases:
        x = gaussian((2000, D.shape[1]), seed)
        res = solve(name, D, x, l0=16, nonneg=nonneg, return_history=True)
        h = res.history
        assert h.shape == (17, 2000)
        assert (h.diff(dim=0) <= 1e-12 * h[0]).all()
        close(h[-1], (x - res.x_hat).norm(dim=1))
        if nonneg:
            assert (res.codes >= 0).all()


def test_plain_clamp_can_increase_the_residual():
    """Why gradient pursuit has a safeguard: the update of the DeepMind post, step then ReLU."""
    D, x = coherent_rows(64, 16, 15), gaussian((500, 16), 18)
    codes, taken = torch.zeros(500, 64, dtype=torch.float64), torch.zeros(500, 64, dtype=torch.bool)
    norms = [x.norm(dim=1)]
    for _ in range(16):
        corr = (x - codes @ D) @ D.T
        taken[torch.arange(500), corr.masked_fill(taken, -torch.inf).argmax(1)] = True
        g = corr * taken
        step = g.pow(2).sum(1) / (g @ D).pow(2).sum(1)
        codes = (codes + step[:, None] * g).clamp_min(0)
        norms.append((x - codes @ D).norm(dim=1))
    rises = (torch.stack(norms).diff(dim=0) > 1e-12).any(0).double().mean()
    assert rises > 0.05
    res = ito.gradient_pursuit(D, x, 16, return_history=True)
    assert (res.history.diff(dim=0) <= 1e-12).all()


def test_pursuits_agree_on_an_orthonormal_dictionary():
    # Orthonormal atoms: every pursuit keeps the l0 largest |<x, d_i>|, with those values.
    q, _ = torch.linalg.qr(gaussian((16, 16), 18))
    D, x, l0 = q.T, gaussian((10, 16), 19), 5
    corr = x @ D.T
    top = corr.abs().topk(l0, dim=1).indices
    expected = torch.zeros_like(corr).scatter_(1, top, corr.gather(1, top))
    for name in PURSUITS:
        kw = {} if name == "omp" else {"nonneg": False}
        close(solve(name, D, x, l0=l0, **kw).codes, expected)


@pytest.mark.parametrize("name", ["omp", "matching_pursuit"])
def test_pursuit_selection_ignores_atom_norms(name):
    # Selection uses normalised atoms, so rescaling atom i by s_i rescales its code by 1/s_i.
    # Not so for gradient pursuit: its gradient step depends on the atom norms.
    D, x = unit_rows(30, 15, 20), gaussian((8, 15), 21)
    scale = 0.2 + 3 * torch.rand(30, generator=torch.Generator().manual_seed(22)).double()
    kw = {} if name == "omp" else {"nonneg": False}
    a, b = solve(name, D, x, **kw), solve(name, D * scale[:, None], x, **kw)
    close(b.codes * scale, a.codes)
    close(b.x_hat, a.x_hat)


# ---------------------------------------------------------------- common contract

ALL = LASSOS + PURSUITS


@pytest.mark.parametrize("name", ALL)
def test_chunked_equals_unchunked(name):
    D, x = unit_rows(40, 20, 23), gaussian((23, 20), 24)
    kw = {"tol": 0.0, "max_iter": 100} if name in LASSOS else {}
    whole = solve(name, D, x, return_history=True, **kw)
    parts = solve(name, D, x, chunk_size=5, return_history=True, **kw)
    for a, b in zip(whole, parts, strict=True):
        if isinstance(a, torch.Tensor):
            close(a, b, atol=1e-12)
        else:
            assert a == b


def test_chunked_pads_history_of_early_chunks():
    D, x = unit_rows(40, 20, 25), gaussian((6, 20), 26)
    x[:3] = 0  # the first chunk converges at once
    res = ito.fista(D, x, 0.3, chunk_size=3, return_history=True, tol=1e-6)
    assert res.history.shape == (res.n_iter + 1, 6) and (res.history[:, :3] == 0).all()


@pytest.mark.parametrize("name", ALL)
def test_float32_agrees_with_float64(name):
    D, x = unit_rows(40, 20, 27), gaussian((10, 20), 28)
    kw = {"tol": 1e-5, "max_iter": 3000} if name in LASSOS else {}
    hi, lo = solve(name, D, x, **kw), solve(name, D.float(), x.float(), **kw)
    assert lo.codes.dtype == torch.float32 and lo.x_hat.dtype == torch.float32
    close(lo.codes, hi.codes, atol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_bias_is_subtracted_first(name):
    D, x, b = unit_rows(40, 20, 29), gaussian((7, 20), 30), gaussian((20,), 31)
    with_bias, without = solve(name, D, x, bias=b), solve(name, D, x - b)
    close(with_bias.codes, without.codes)
    close(with_bias.x_hat, without.x_hat + b)
    close(with_bias.x_hat, with_bias.codes @ D + b)


@pytest.mark.parametrize("name", ALL)
def test_empty_batch(name):
    res = solve(name, unit_rows(10, 8, 32), torch.zeros(0, 8, dtype=torch.float64))
    assert res.codes.shape == (0, 10) and res.x_hat.shape == (0, 8) and res.converged.shape == (0,)


@pytest.mark.parametrize("name", ALL)
def test_sae_ito_uses_decoder_and_bias(name):
    sae = make_sae(SAEConfig(d_in=16, d_sae=32, architecture="topk", k=4, seed=1))
    with torch.no_grad():
        sae.b_dec.copy_(gaussian((16,), 33, torch.float32))
    x = gaussian((9, 16), 34, torch.float32)
    res = ito.sae_ito(sae, x, name, **({"l1": 0.1} if name in LASSOS else {"l0": 4}))
    ref = solve(
        name,
        sae.W_dec.detach(),
        x,
        bias=sae.b_dec.detach(),
        **({"l1": 0.1} if name in LASSOS else {"l0": 4}),
    )
    close(res.codes, ref.codes)
    close(res.x_hat, sae.decode(res.codes).detach(), atol=1e-5)
    assert not res.codes.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
def test_cuda_matches_cpu(name):
    D, x, b = unit_rows(40, 20, 35), gaussian((12, 20), 36), gaussian((20,), 37)
    cpu = solve(name, D, x, bias=b)
    gpu = solve(name, D.cuda(), x.cuda(), bias=b.cuda())
    assert gpu.codes.is_cuda and gpu.x_hat.is_cuda and gpu.converged.is_cuda
    close(gpu.codes, cpu.codes, atol=1e-8)


def test_lasso_objective_by_hand():
    D = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    x, c = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.5, -1.0]])
    # residual (0.5, 3), 0.5 * 9.25 = 4.625, plus 0.1 * 1.5
    close(ito.lasso_objective(D, x, c, 0.1), torch.tensor([4.775]), atol=1e-6)


# ---------------------------------------------------------------- validation

D0, X0 = unit_rows(10, 6, 38), gaussian((3, 6), 39)
ERRORS = [
    (ito.fista, (D0[0], X0, 0.1), {}, "D must be a 2-D tensor"),
    (ito.fista, (D0.long(), X0, 0.1), {}, "D must be float32 or float64"),
    (ito.fista, (D0[:, :0], X0[:, :0], 0.1), {}, "D must be non-empty"),
    (ito.fista, (D0, X0[:, :5], 0.1), {}, r"x must be of shape \[batch, d=6\]"),
    (ito.fista, (D0, X0.float(), 0.1), {}, "x must be of D's dtype and device"),
    (ito.fista, (D0, X0 * float("nan"), 0.1), {}, "x must be finite, got 'NaN or inf'"),
    (ito.fista, (D0, X0, -0.1), {}, "l1 must be a number >= 0"),
    (ito.fista, (D0, X0, float("inf")), {}, "l1 must be a number >= 0"),
    (ito.ista, (D0, X0, 0.1), {"max_iter": 0}, "max_iter must be an integer >= 1, got 0"),
    (ito.ista, (D0, X0, 0.1), {"tol": -1.0}, "tol must be a number >= 0"),
    (ito.ista, (D0, X0, 0.1), {"nonneg": 1}, "nonneg must be True or False"),
    (ito.ista, (D0, X0, 0.1), {"init": X0}, r"init must be None or of shape \[batch, n_atoms\]"),
    (ito.fista, (D0, X0, 0.1), {"restart": None}, "restart must be True or False"),
    (ito.fista, (D0, X0, 0.1), {"chunk_size": 0}, "chunk_size must be an integer >= 1"),
    (ito.fista, (D0, X0, 0.1), {"bias": X0[0, :5]}, r"bias must be None or of shape \[d=6\]"),
    (ito.fista, (D0, X0, 0.1), {"return_history": "y"}, "return_history must be True or False"),
    (ito.omp, (D0, X0, 0), {}, r"l0 must be an integer in \[1, 6\]"),
    (ito.omp, (D0, X0, 7), {}, r"l0 must be an integer in \[1, 6\]"),
    (ito.omp, (D0, X0, 2.0), {}, r"l0 must be an integer in \[1, 6\]"),
    (ito.gradient_pursuit, (D0, X0, 11), {}, r"l0 must be an integer in \[1, 10\]"),
    (ito.gradient_pursuit, (D0, X0, 3), {"nonneg": "no"}, "nonneg must be True or False"),
    (ito.matching_pursuit, (D0, X0, 0), {}, "l0 must be an integer >= 1"),
    (ito.lasso_objective, (D0, X0, X0, 0.1), {}, r"codes must be of shape \[batch, n_atoms\]"),
    (ito.omp, (D0.tolist(), X0, 2), {}, r"D must be a 2-D tensor \[n_atoms, d\], got \[\["),
    (ito.gradient_pursuit, (D0, X0, 3), {"chunk_size": 0}, "chunk_size must be an integer >= 1"),
    (ito.matching_pursuit, (D0, X0, 3), {"return_history": 1}, "return_history must be True or"),
]


@pytest.mark.parametrize("fn", [ito.ista, ito.fista, ito.gradient_pursuit, ito.matching_pursuit])
def test_unknown_keyword_is_a_type_error(fn):
    with pytest.raises(TypeError, match="max_iters"):
        fn(D0, X0, 2, max_iters=3)


@pytest.mark.parametrize(("fn", "args", "kwargs", "match"), ERRORS)
def test_validation_errors(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


def test_sae_ito_errors():
    sae = make_sae(SAEConfig(d_in=6, d_sae=10))
    x = X0.float()
    with pytest.raises(ValueError, match="solver must be one of"):
        ito.sae_ito(sae, x, "lars", l0=2)
    with pytest.raises(ValueError, match="bias must be not given"):
        ito.sae_ito(sae, x, "omp", l0=2, bias=sae.b_dec)
    with pytest.raises(ValueError, match="sae must be an SAE with a tensor attribute W_dec"):
        ito.sae_ito(object(), x, "omp", l0=2)
    with pytest.raises(ValueError, match="x must be of D's dtype"):
        ito.sae_ito(sae, X0, "omp", l0=2)
