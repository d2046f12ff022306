"""Tests for saelib.toys.composed: layout, one feature per set, the copula's correlation, errors."""

import math

import pytest
import torch

from saelib.toys.composed import composed_sets


def test_two_by_two_in_two_dims_is_the_post_layout():
    toy = composed_sets(100, d=2, generator=0)
    post = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # x1, x2, y1, y2
    assert torch.equal(toy.batch.dictionary, post)
    assert toy.composed_pairs.tolist() == [[0, 2], [0, 3], [1, 2], [1, 3]]
    assert torch.allclose(toy.batch.x, toy.batch.codes @ toy.batch.dictionary)


@pytest.mark.parametrize("n_sets,set_size,d", [(2, 2, 8), (3, 4, 16), (2, 1, 3)])
def test_one_active_feature_per_set(n_sets, set_size, d):
    toy = composed_sets(2000, n_sets=n_sets, set_size=set_size, d=d, generator=1)
    codes = toy.batch.codes
    assert codes.shape == (2000, n_sets * set_size) and toy.batch.x.shape == (2000, d)
    per_set = (codes > 0).reshape(2000, n_sets, set_size).sum(-1)
    assert (per_set == 1).all()
    assert ((codes > 0) & (codes <= 1)).sum() == codes.count_nonzero()
    n_pairs = math.comb(n_sets * set_size, 2) - n_sets * math.comb(set_size, 2)
    assert toy.composed.shape == (n_pairs, d)
    assert (toy.set_of[toy.composed_pairs[:, 0]] != toy.set_of[toy.composed_pairs[:, 1]]).all()
    assert torch.allclose(toy.batch.dictionary.norm(dim=1), torch.ones(n_sets * set_size))


def test_members_are_uniform_within_a_set():
    codes = composed_sets(40_000, n_sets=2, set_size=4, d=8, generator=2).batch.codes
    rate = (codes > 0).float().mean(0)  # each member: 1/4, sd sqrt(3/16/40000) ~ 0.0022
    assert (rate - 0.25).abs().max() < 0.011


@pytest.mark.parametrize("r", [0.0, 0.5, 1.0])
def test_magnitude_correlation_follows_the_copula(r):
    codes = composed_sets(50_000, n_sets=3, d=8, correlation=r, generator=3).batch.codes
    mags = codes.reshape(-1, 3, 2).sum(-1)  # [n, n_sets]
    c = torch.corrcoef(mags.T.double())
    expected = 6 / math.pi * math.asin(r / 2)
    off = c[~torch.eye(3, dtype=torch.bool)]
    assert (off - expected).abs().max() < 0.02, (off, expected)
    if r == 1.0:
        assert torch.allclose(mags[:, 0], mags[:, 1]) and torch.allclose(mags[:, 0], mags[:, 2])


def test_one_hot_fraction_is_exact():
    codes = composed_sets(1000, n_sets=3, d=8, one_hot_fraction=0.3, generator=4).batch.codes
    n_active = (codes > 0).sum(1)
    assert (n_active == 1).sum() == 300 and (n_active == 3).sum() == 700


def test_dictionary_depends_on_dictionary_seed_only():
    a = composed_sets(10, d=6, generator=1).batch.dictionary
    assert torch.equal(a, composed_sets(10, d=6, generator=2).batch.dictionary)
    assert not torch.equal(
        a, composed_sets(10, d=6, generator=1, dictionary_seed=1).batch.dictionary
    )


def test_deterministic_and_seed_dependent():
    a = composed_sets(50, d=5, generator=7).batch.x
    assert torch.equal(a, composed_sets(50, d=5, generator=7).batch.x)
    assert not torch.equal(a, composed_sets(50, d=5, generator=8).batch.x)


@pytest.mark.parametrize(
    "kw,match",
    [({"n_sets": 1}, "n_sets must be an integer >= 2"), ({"d": 1}, "d must be an integer >= 2"),
     ({"correlation": -0.5}, r"correlation must be a number in \[0, 1\]"),
     ({"one_hot_fraction": 2}, "one_hot_fraction must be"), ({"set_size": 0}, "set_size")],
)  # fmt: skip
def test_bad_parameters_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        composed_sets(10, generator=0, **kw)
