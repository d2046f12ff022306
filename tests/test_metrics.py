"""Tests for saelib.metrics: hand-computed cases, independent references, edge cases, errors."""

import itertools
import math

import numpy as np
import pytest
import torch

from saelib.metrics import (
    dead_fraction,
    dense_fraction,
    explained_variance,
    firing_rates,
    fvu,
    l0,
    matched_cosines,
    mcc,
    shrinkage,
)


def assert_close(actual, expected, atol=1e-6):
    """Element-wise comparison via numpy (torch.testing's first call imports ~1 s of modules)."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=0, atol=atol)


# ---------------------------------------------------------------- fvu / explained variance

# x has column means (3, 4); centred rows (-2,-2), (0,0), (2,2): total = 8 + 0 + 8 = 16.
# x_hat - x = (0,1), (1,0), (0,0): residual = 1 + 1 + 0 = 2, so FVU = 2/16 = 0.125.
X = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
X_HAT = torch.tensor([[1.0, 3.0], [4.0, 4.0], [5.0, 6.0]])


def test_fvu_hand_computed():
    assert fvu(X, X_HAT) == pytest.approx(0.125)
    assert explained_variance(X, X_HAT) == pytest.approx(0.875)


def test_fvu_of_mean_is_one_and_of_x_is_zero():
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0)) + 3.0
    assert fvu(x, x.mean(0, keepdim=True).expand_as(x)) == pytest.approx(1.0)
    assert fvu(x, x) == 0.0
    assert explained_variance(x, x) == 1.0


def test_fvu_is_centred():
    # An uncentred denominator would grow with the offset and shrink the FVU.
    offset = torch.tensor([100.0, -50.0])
    assert fvu(X + offset, X_HAT + offset) == pytest.approx(0.125)


def test_fvu_is_ratio_of_sums_not_mean_of_ratios():
    # Row 1 of X is the mean (zero centred norm): a mean of per-row ratios would be inf.
    assert math.isfinite(fvu(X, X_HAT))


def test_fvu_flattens_leading_dims():
    x = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1))
    x_hat = x + 0.1 * torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(2))
    assert fvu(x, x_hat) == pytest.approx(fvu(x.reshape(20, 3), x_hat.reshape(20, 3)))


def test_fvu_float32_matches_float64():
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x_hat = 0.8 * x + 0.3 * torch.randn(200, 16, dtype=torch.float64)
    assert fvu(x.float(), x_hat.float()) == pytest.approx(fvu(x, x_hat), rel=1e-5)


def test_fvu_shape_mismatch_names_x_hat():
    with pytest.raises(ValueError, match=r"x_hat must have the same shape as x \[3, 2\]"):
        fvu(X, X_HAT[:, :1])


def test_fvu_rejects_1d_and_constant_x():
    with pytest.raises(ValueError, match=r"x must have shape \[n, d\]"):
        fvu(X[:, 0], X_HAT[:, 0])
    with pytest.raises(ValueError, match="zero variance"):
        fvu(torch.ones(4, 2), torch.zeros(4, 2))


# ---------------------------------------------------------------- shrinkage


def test_shrinkage_of_half_is_half():
    x = torch.randn(30, 8, generator=torch.Generator().manual_seed(4))
    assert shrinkage(x, 0.5 * x) == pytest.approx(0.5)
    assert shrinkage(x, x) == pytest.approx(1.0)


def test_shrinkage_hand_computed_and_is_argmin():
    # sum <x_hat, x_hat> = 4 + 1 = 5; sum <x_hat, x> = 2 + 2 = 4; gamma = 5/4.
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    x_hat = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    gamma = shrinkage(x, x_hat)
    assert gamma == pytest.approx(1.25)

    def loss(g):
        return (x_hat / g - x).pow(2).sum().item()

    grid = np.linspace(0.5, 2.5, 2001)
    assert grid[np.argmin([loss(g) for g in grid])] == pytest.approx(gamma, abs=1e-3)


def test_shrinkage_errors():
    with pytest.raises(ValueError, match="x_hat must have the same shape"):
        shrinkage(X, X_HAT.T)
    with pytest.raises(ValueError, match="x_hat is all zeros"):
        shrinkage(X, torch.zeros_like(X))
    with pytest.raises(ValueError, match="orthogonal"):
        shrinkage(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))


# ---------------------------------------------------------------- sparsity

# Non-zeros per row: 2, 0, 2, 1 -> L0 = 5/4. Per column: 2, 1, 2, 0 of 4 rows.
F = torch.tensor(
    [
        [0.0, 1.0, 2.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [3.0, 0.0, -1.0, 0.0],
        [0.5, 0.0, 0.0, 0.0],
    ]
)


def test_l0_hand_computed():
    assert l0(F) == pytest.approx(1.25)
    assert l0(F.reshape(2, 2, 4)) == pytest.approx(1.25)


def test_firing_rates_dead_and_dense_hand_computed():
    assert_close(firing_rates(F), [0.5, 0.25, 0.5, 0.0])
    assert dead_fraction(F) == pytest.approx(0.25)
    assert dense_fraction(F, threshold=0.3) == pytest.approx(0.5)
    assert dense_fraction(F, threshold=0.2) == pytest.approx(0.75)
    # Strictly more than: rates of exactly 0.5 are not dense at threshold 0.5.
    assert dense_fraction(F, threshold=0.5) == 0.0


def test_dense_fraction_exact_tenth_is_not_dense():
    f = torch.zeros(10, 2)
    f[0, 0] = 1.0  # latent 0 fires on exactly 10% of rows
    f[:2, 1] = 1.0  # latent 1 on 20%
    assert dense_fraction(f) == pytest.approx(0.5)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5, float("nan")])
def test_dense_fraction_rejects_bad_threshold(threshold):
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        dense_fraction(F, threshold=threshold)


def test_sparsity_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"f must have shape \[n, d\]"):
        l0(torch.ones(3))
    with pytest.raises(ValueError, match=r"f must have shape \[n, d\]"):
        dead_fraction(torch.ones(0, 4))


# ---------------------------------------------------------------- matched cosines


def _random_dict(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_matched_cosines_permuted_flipped_scaled_dictionary():
    true = _random_dict(6, 10, 5)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    scales = torch.tensor([0.1, 2.0, 5.0, 1.0, 0.3, 7.0])
    learned = true[perm] * (signs * scales)[:, None]  # learned[j] is parallel to true[perm[j]]
    out = matched_cosines(true, learned)
    assert_close(out.max_abs_cos, np.ones(6))
    assert_close(out.hungarian_abs_cos, np.ones(6))
    assert out.mmcs == pytest.approx(1.0)
    assert out.hungarian_mean == pytest.approx(1.0)
    assert out.assignment.dtype == torch.long
    assert out.assignment.tolist() == torch.argsort(perm).tolist()


def test_matched_cosines_atom_rotated_60_degrees():
    true = torch.eye(4)[:3]  # e1, e2, e3
    learned = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0.5, math.sqrt(3) / 2]])
    out = matched_cosines(true, learned)
    assert_close(out.max_abs_cos, [1.0, 1.0, 0.5])
    assert out.mmcs == pytest.approx(2.5 / 3)
    assert out.assignment.tolist() == [0, 1, 2]


def test_matched_cosines_hungarian_is_one_to_one():
    # Both true atoms are closest to e1; one-to-one, true atom 1 must take e2 (|cos| = 0.6).
    true = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    learned = torch.eye(2)
    out = matched_cosines(true, learned)
    assert_close(out.max_abs_cos, [1.0, 0.8])
    assert_close(out.hungarian_abs_cos, [1.0, 0.6])
    assert out.hungarian_mean == pytest.approx(0.8)
    assert out.assignment.tolist() == [0, 1]


def test_matched_cosines_fewer_learned_than_true():
    true = torch.eye(3)
    learned = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    out = matched_cosines(true, learned)
    assert_close(out.max_abs_cos, [1.0, 1.0, 0.0])
    assert_close(out.hungarian_abs_cos, [1.0, 1.0, 0.0])
    assert out.hungarian_mean == pytest.approx(2 / 3)
    assert out.assignment.tolist() == [1, 0, -1]


def _brute_force_matching(sim):
    """Best total over all injective maps from the smaller side to the larger one."""
    n_rows, n_cols = sim.shape
    if n_rows <= n_cols:
        return max(
            sum(sim[i, p[i]] for i in range(n_rows))
            for p in itertools.permutations(range(n_cols), n_rows)
        )
    return max(
        sum(sim[p[j], j] for j in range(n_cols))
        for p in itertools.permutations(range(n_rows), n_cols)
    )


@pytest.mark.parametrize("n_true,n_learned", [(4, 6), (5, 3), (4, 4)])
def test_matched_cosines_against_brute_force(n_true, n_learned):
    true, learned = _random_dict(n_true, 3, 6).double(), _random_dict(n_learned, 3, 7).double()
    t, l = true.numpy(), learned.numpy()
    cos = np.abs(
        (t / np.linalg.norm(t, axis=1)[:, None]) @ (l / np.linalg.norm(l, axis=1)[:, None]).T
    )
    out = matched_cosines(true, learned)
    np.testing.assert_allclose(out.max_abs_cos.numpy(), cos.max(axis=1))
    assert out.hungarian_mean * n_true == pytest.approx(_brute_force_matching(cos))
    matched = out.assignment >= 0
    assert matched.sum() == min(n_true, n_learned)
    assert len(set(out.assignment[matched].tolist())) == matched.sum()  # one-to-one


def test_matched_cosines_zero_atom_scores_zero():
    out = matched_cosines(torch.eye(2), torch.tensor([[0.0, 0.0], [0.0, 3.0]]))
    assert_close(out.max_abs_cos, [0.0, 1.0])
    assert not torch.isnan(out.hungarian_abs_cos).any()


def test_matched_cosines_float32_matches_float64():
    true, learned = _random_dict(40, 16, 8).double(), _random_dict(60, 16, 9).double()
    out64, out32 = matched_cosines(true, learned), matched_cosines(true.float(), learned.float())
    assert out64.max_abs_cos.dtype == torch.float64 and out32.max_abs_cos.dtype == torch.float32
    assert_close(out32.max_abs_cos.double(), out64.max_abs_cos, atol=1e-6)
    assert out32.hungarian_mean == pytest.approx(out64.hungarian_mean, abs=1e-6)


def test_matched_cosines_errors():
    with pytest.raises(ValueError, match=r"learned_dict must have d_in = 3 columns"):
        matched_cosines(torch.eye(3), torch.eye(4))
    with pytest.raises(ValueError, match=r"true_dict must be 2-D"):
        matched_cosines(torch.ones(3), torch.eye(3))
    with pytest.raises(ValueError, match=r"learned_dict contains NaN or inf"):
        matched_cosines(torch.eye(2), torch.tensor([[1.0, float("nan")]]))


# ---------------------------------------------------------------- MCC


def _sparse_codes(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, m, generator=g) * (torch.rand(n, m, generator=g) < 0.2)


def test_mcc_hand_computed_single_pair():
    # t centred (-1, 0, 1); l = (2, 4, 7) centred (-7, -1, 8)/3. cov = 15/3 = 5, var t = 2,
    # var l = 114/9, so r = 5 / sqrt(2 * 114 / 9) = 15 / sqrt(228).
    t = torch.tensor([[1.0], [2.0], [3.0]])
    l = torch.tensor([[2.0], [4.0], [7.0]])
    out = mcc(t, l)
    assert out.mcc == pytest.approx(15 / math.sqrt(228))
    assert out.assignment.tolist() == [0]


def test_mcc_permuted_scaled_shifted_codes_is_one():
    true = _sparse_codes(300, 6, 10)
    perm = torch.tensor([2, 5, 0, 1, 4, 3])
    scales = torch.tensor([3.0, -0.5, 10.0, 1.0, -2.0, 0.1])
    learned = true[:, perm] * scales + 1.0  # learned column j follows true column perm[j]
    out = mcc(true, learned)  # float32: dot products over 300 rows round at about 1e-6
    assert out.mcc == pytest.approx(1.0, abs=1e-5)
    assert_close(out.per_feature, np.ones(6), atol=1e-5)
    assert out.assignment.tolist() == torch.argsort(perm).tolist()


def test_mcc_independent_codes_is_small():
    # Independent columns over n = 2000 rows: each |r| is about 1/sqrt(n) = 0.02.
    out = mcc(_sparse_codes(2000, 8, 11), _sparse_codes(2000, 8, 12))
    assert out.mcc < 0.1


def test_mcc_matches_numpy_corrcoef():
    true, learned = _sparse_codes(100, 3, 13).double(), _sparse_codes(100, 4, 14).double()
    learned[:, 0] += 0.5 * true[:, 1]
    ref = np.abs(np.corrcoef(true.numpy().T, learned.numpy().T)[:3, 3:])
    out = mcc(true, learned)
    assert out.mcc * 3 == pytest.approx(_brute_force_matching(ref))
    a = out.assignment.numpy()
    np.testing.assert_allclose(out.per_feature.numpy(), ref[np.arange(3), a])


def test_mcc_constant_columns_have_zero_correlation():
    true = _sparse_codes(50, 3, 15)
    true[:, 1] = 0.1  # constant, not exactly representable: the mean may not round to it
    learned = true.clone()
    learned[:, 2] = 0.0  # a dead latent
    out = mcc(true, learned)
    assert not torch.isnan(out.per_feature).any()
    assert out.per_feature[0] == pytest.approx(1.0)
    assert out.per_feature[1] == 0.0 and out.per_feature[2] == 0.0


def test_mcc_fewer_learned_than_true():
    true = _sparse_codes(200, 4, 16)
    out = mcc(true, true[:, [3, 0]])
    assert_close(out.per_feature[[0, 3]], np.ones(2))
    assert out.assignment.tolist()[0] == 1 and out.assignment.tolist()[3] == 0
    assert out.assignment.tolist()[1:3] == [-1, -1]
    assert out.per_feature[1:3].tolist() == [0.0, 0.0]  # unmatched
    assert out.mcc == pytest.approx(0.5, abs=1e-6)


def test_mcc_float32_matches_float64():
    true, learned = _sparse_codes(500, 5, 17).double(), _sparse_codes(500, 7, 18).double()
    learned[:, :5] += true
    out64, out32 = mcc(true, learned), mcc(true.float(), learned.float())
    assert out32.mcc == pytest.approx(out64.mcc, abs=1e-5)
    assert out32.assignment.tolist() == out64.assignment.tolist()


def test_mcc_errors():
    with pytest.raises(ValueError, match=r"learned_codes must have n = 10 rows"):
        mcc(torch.rand(10, 2), torch.rand(9, 2))
    with pytest.raises(ValueError, match=r"true_codes must be 2-D with at least 2 row"):
        mcc(torch.rand(1, 2), torch.rand(1, 2))
    with pytest.raises(ValueError, match=r"learned_codes must be 2-D .* and 1 column"):
        mcc(torch.rand(5, 2), torch.rand(5, 0))
    with pytest.raises(ValueError, match=r"true_codes contains NaN or inf"):
        mcc(torch.tensor([[1.0], [float("inf")]]), torch.rand(2, 1))
