"""Tests for saelib.toys.dictionaries, .synthetic and .hedging: determinism, layout, firing rates
within binomial bounds, the hedging toy and its prediction."""

import dataclasses
import math

import pytest
import torch

from saelib.toys.dictionaries import firing_probabilities, random_dictionary
from saelib.toys.hedging import eigenvector_hedging, hedging_toy
from saelib.toys.synthetic import ROLES, SyntheticConfig, SyntheticData, feature_roles

N_STAT = 200_000  # samples for frequency checks: 5 sigma of a rate near 0.5 is about 0.0056


def assert_rate(observed: torch.Tensor, expected: torch.Tensor, n: int | torch.Tensor) -> None:
    """Empirical rates within 5 binomial standard deviations of the expected probabilities."""
    observed, expected = torch.as_tensor(observed).double(), torch.as_tensor(expected).double()
    bound = 5 * torch.sqrt(expected * (1 - expected) / torch.as_tensor(n).double()) + 1e-6
    excess = (observed - expected).abs() - bound
    assert (excess <= 0).all(), f"rates {observed} vs {expected} exceed 5 sigma by {excess}"


def assert_close(actual, expected, atol=1e-6):
    """Element-wise closeness (torch.testing's first call imports about 1 s of modules)."""
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, rtol=0, atol=atol), (actual - expected).abs().max()


def mean_offdiag(m: torch.Tensor) -> torch.Tensor:
    mask = ~torch.eye(len(m), dtype=torch.bool)
    return m[mask].mean()


# ---------------------------------------------------------------- random_dictionary


@pytest.mark.parametrize("orthogonal", [False, True])
@pytest.mark.parametrize("coherence", [0.0, 0.5])
def test_dictionary_rows_unit_norm_and_shape(orthogonal, coherence):
    D = random_dictionary(6, 10, coherence=coherence, orthogonal=orthogonal, generator=0)
    assert D.shape == (6, 10) and D.dtype == torch.float32
    assert_close(D.norm(dim=1), torch.ones(6))


def test_dictionary_determinism():
    a = random_dictionary(8, 5, coherence=0.2, generator=3)
    assert torch.equal(a, random_dictionary(8, 5, coherence=0.2, generator=3))
    assert torch.equal(
        a, random_dictionary(8, 5, coherence=0.2, generator=torch.Generator().manual_seed(3))
    )
    assert not torch.equal(a, random_dictionary(8, 5, coherence=0.2, generator=4))


@pytest.mark.parametrize("coherence", [0.0, 0.3])
def test_orthogonal_dictionary_has_exact_cosines(coherence):
    D = random_dictionary(5, 8, coherence=coherence, orthogonal=True, generator=1)
    expected = coherence * torch.ones(5, 5) + (1 - coherence) * torch.eye(5)
    assert_close(D @ D.T, expected)


def test_coherence_raises_mean_abs_cosine_and_sets_mean_cosine():
    abs_cos = []
    for c in [0.0, 0.2, 0.5, 0.8]:
        D = random_dictionary(200, 64, coherence=c, generator=2)
        cos = D @ D.T
        # Mean cosine is c up to the spread (1 - c) / sqrt(d - 1) averaged over ~20k pairs.
        assert abs(mean_offdiag(cos).item() - c) < 0.01
        abs_cos.append(mean_offdiag(cos.abs()).item())
    assert abs_cos == sorted(abs_cos) and abs_cos[0] < 0.15 < 0.45 < abs_cos[2]


def test_dictionary_device_argument_is_honoured():
    assert random_dictionary(3, 4, generator=0, device="meta").device.type == "meta"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_features=0, d=4), "n_features"),
        (dict(n_features=3, d=0), "d must be"),
        (dict(n_features=3, d=4, coherence=1.0), "coherence"),
        (dict(n_features=3, d=4, coherence=-0.1), "coherence"),
        (dict(n_features=5, d=4, orthogonal=True), "n_features"),
        (dict(n_features=4, d=4, orthogonal=True, coherence=0.1), "n_features"),
    ],
)
def test_dictionary_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_dictionary(**kwargs, generator=0)


# ---------------------------------------------------------------- firing_probabilities


def test_uniform_probabilities():
    assert_close(firing_probabilities(8, kind="uniform", mean_active=2.0), torch.full((8,), 0.25))


@pytest.mark.parametrize("mean_active, exponent", [(3.0, 1.0), (2.0, 1.5), (12.0, 1.0)])
def test_zipf_probabilities_decrease_and_sum_to_mean_active(mean_active, exponent):
    p = firing_probabilities(
        16, kind="zipf", mean_active=mean_active, zipf_exponent=exponent
    ).double()
    assert p.sum().item() == pytest.approx(mean_active, abs=1e-5)
    assert (p > 0).all() and (p <= 1).all()
    assert (p[1:] <= p[:-1]).all()
    uncapped = p[p < 1]
    assert (uncapped[1:] < uncapped[:-1]).all()  # strictly decreasing below the cap
    # Below the cap the ratios are those of Zipf's law.
    ranks = torch.arange(1, 17, dtype=torch.float64)[p < 1]
    assert_close(uncapped / uncapped[0], (ranks / ranks[0]) ** -exponent)


def test_zipf_capping_happens_for_large_mean_active():
    p = firing_probabilities(16, kind="zipf", mean_active=12.0)
    assert (p == 1).sum() >= 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_features=0), "n_features"),
        (dict(n_features=4, kind="powerlaw"), r"kind must be one of \['uniform', 'zipf'\]"),
        (dict(n_features=4, mean_active=0.0), r"mean_active must be a number in \(0, "),
        (dict(n_features=4, mean_active=5.0), "mean_active"),
        (dict(n_features=4, kind="zipf", zipf_exponent=-1.0), "zipf_exponent"),
    ],
)
def test_firing_probability_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        firing_probabilities(**kwargs)


# ---------------------------------------------------------------- SyntheticConfig


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_features=0), "n_features"),
        (dict(n_features=2.5), "n_features"),
        (dict(d=0), "d must be"),
        (dict(mean_active=0), "mean_active"),
        (dict(mean_active=17.0), "mean_active"),
        (dict(frequency="pareto"), r"frequency must be one of \['uniform', 'zipf'\], got 'pareto'"),
        (dict(zipf_exponent=-0.5), "zipf_exponent"),
        (dict(magnitude="lognormal"), "magnitude must be one of"),
        (dict(magnitude_scale=0.0), "magnitude_scale"),
        (dict(coherence=1.0), r"coherence must be a number in \[0, 1\), got 1.0"),
        (dict(noise_std=-1.0), "noise_std"),
        (dict(offset_norm=-1.0), "offset_norm"),
        (dict(noise_std=float("nan")), "noise_std"),
        (dict(correlated_pairs=-1), "correlated_pairs"),
        (dict(pair_cofire_prob=1.5), "pair_cofire_prob"),
        (dict(n_parents=-1), "n_parents"),
        (dict(n_parents=2, children_per_parent=0), "children_per_parent"),
        (dict(n_parents=0, children_per_parent=2), "children_per_parent"),
        (dict(n_parents=1, children_per_parent=2, child_prob=-0.1), "child_prob"),
        (
            dict(n_parents=1, children_per_parent=3, child_prob=0.5, exclusive_children=True),
            "child_prob",
        ),
        (dict(exclusive_children="yes"), "exclusive_children"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.0), "seed"),
        (dict(n_features=8, n_parents=2, children_per_parent=2, correlated_pairs=2), "n_features"),
    ],
)
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticConfig(**kwargs)


def test_config_is_frozen():
    config = SyntheticConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]


# ---------------------------------------------------------------- SyntheticData


def test_sample_shapes_and_reconstruction():
    config = SyntheticConfig(n_features=12, d=6, mean_active=3.0)
    batch = SyntheticData(config).sample(500, generator=0)
    assert batch.x.shape == (500, 6) and batch.codes.shape == (500, 12)
    assert batch.dictionary.shape == (12, 6)
    assert {batch.x.dtype, batch.codes.dtype, batch.dictionary.dtype} == {torch.float32}
    assert_close(batch.dictionary.norm(dim=1), torch.ones(12))
    assert torch.equal(batch.x, batch.codes @ batch.dictionary)
    assert (batch.codes >= 0).all()


def test_noise_has_the_configured_std():
    config = SyntheticConfig(noise_std=0.1)
    batch = SyntheticData(config).sample(20_000, generator=0)
    residual = batch.x - batch.codes @ batch.dictionary
    assert residual.std().item() == pytest.approx(0.1, rel=0.02)


def test_offset_is_one_constant_vector_of_the_configured_norm():
    plain = SyntheticData(SyntheticConfig(seed=3)).sample(100, generator=0)
    data = SyntheticData(SyntheticConfig(offset_norm=5.0, seed=3))
    batch = data.sample(100, generator=0)
    assert torch.equal(batch.codes, plain.codes)  # the offset does not change the draws
    residual = batch.x - batch.codes @ batch.dictionary
    assert_close(residual, data.offset.expand(100, -1))
    assert data.offset.norm().item() == pytest.approx(5.0)


def test_sample_determinism():
    config = SyntheticConfig(correlated_pairs=2, n_parents=1, children_per_parent=2, seed=5)
    a, b = SyntheticData(config), SyntheticData(config)
    for left, right in zip(a.sample(100, generator=7), b.sample(100, generator=7), strict=True):
        assert torch.equal(left, right)
    assert not torch.equal(a.sample(100, generator=7).x, a.sample(100, generator=8).x)
    # The default stream advances between calls and replays from a fresh object.
    first, second = a.sample(50).x, a.sample(50).x
    assert not torch.equal(first, second)
    assert torch.equal(first, b.sample(50).x) and torch.equal(second, b.sample(50).x)
    other = SyntheticData(dataclasses.replace(config, seed=6))
    assert not torch.equal(a.dictionary, other.dictionary)


def test_batches_are_endless_deterministic_and_shaped():
    data = SyntheticData(SyntheticConfig())
    first = [next(it) for it in [data.batches(32, seed=1)] for _ in range(3)]
    again = [next(it) for it in [data.batches(32, seed=1)] for _ in range(3)]
    other = next(data.batches(32, seed=2))
    assert all(x.shape == (32, 8) for x in first)
    assert all(torch.equal(u, v) for u, v in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[0], other)


FIRING_CONFIGS = {
    "uniform": SyntheticConfig(n_features=10, frequency="uniform", mean_active=3.0),
    "zipf": SyntheticConfig(n_features=16, mean_active=4.0, zipf_exponent=1.2),
    "pairs": SyntheticConfig(n_features=12, mean_active=3.0, correlated_pairs=3),
    "hierarchy": SyntheticConfig(
        n_features=16, mean_active=4.0, n_parents=2, children_per_parent=3, child_prob=0.4
    ),
    "exclusive": SyntheticConfig(
        n_features=16,
        mean_active=4.0,
        n_parents=2,
        children_per_parent=3,
        child_prob=0.3,
        exclusive_children=True,
        correlated_pairs=2,
        pair_cofire_prob=0.5,
    ),
}


@pytest.mark.parametrize("name", list(FIRING_CONFIGS))
def test_empirical_frequencies_match_probabilities(name):
    data = SyntheticData(FIRING_CONFIGS[name])
    active = data.sample(N_STAT, generator=11).codes > 0
    assert_rate(active.double().mean(0), data.probabilities, N_STAT)


def test_independent_features_keep_their_base_probabilities():
    config = FIRING_CONFIGS["exclusive"]
    base = firing_probabilities(16, kind="zipf", mean_active=4.0)
    data = SyntheticData(config)
    children = data.children.flatten()
    others = torch.ones(16, dtype=torch.bool)
    others[children] = False
    # Pairs keep marginals too: the trigger is the rarer of the two neighbours.
    assert_close(data.probabilities[others], base[others])
    assert_close(data.probabilities[data.children], base[data.parents, None].expand(2, 3) * 0.3)


@pytest.mark.parametrize("cofire", [0.3, 0.95])
def test_pair_cofire_conditional_probability(cofire):
    # Uniform rates of 0.1, so co-firing at `cofire` is far above chance.
    config = SyntheticConfig(
        n_features=20,
        frequency="uniform",
        mean_active=2.0,
        correlated_pairs=3,
        pair_cofire_prob=cofire,
    )
    data = SyntheticData(config)
    active = data.sample(N_STAT, generator=3).codes > 0
    for trigger, partner in data.pairs.tolist():
        fired = active[:, trigger]
        assert_rate(active[fired, partner].double().mean(), cofire, fired.sum())
        assert_rate(active[:, partner].double().mean(), 0.1, N_STAT)  # marginal kept
        assert_rate(
            active[~fired, partner].double().mean(), (0.1 - 0.1 * cofire) / 0.9, (~fired).sum()
        )


@pytest.mark.parametrize("exclusive", [False, True])
def test_children_fire_only_with_parents(exclusive):
    config = SyntheticConfig(
        n_features=16,
        mean_active=4.0,
        n_parents=3,
        children_per_parent=3,
        child_prob=0.3,
        exclusive_children=exclusive,
    )
    data = SyntheticData(config)
    active = data.sample(N_STAT, generator=4).codes > 0
    for parent, kids in zip(data.parents.tolist(), data.children.tolist(), strict=True):
        parent_on = active[:, parent]
        assert not active[~parent_on][:, kids].any()
        assert_rate(
            active[parent_on][:, kids].double().mean(0), torch.full((3,), 0.3), parent_on.sum()
        )
        n_active_kids = active[:, kids].sum(1)
        if exclusive:
            assert n_active_kids.max() == 1
        else:
            assert n_active_kids.max() > 1


@pytest.mark.parametrize(
    "magnitude, mean, std",
    [
        ("uniform", 0.5, math.sqrt(1 / 12)),
        ("halfnormal", math.sqrt(2 / math.pi), math.sqrt(1 - 2 / math.pi)),
        ("exponential", 1.0, 1.0),
        ("constant", 1.0, 0.0),
    ],
)
def test_magnitudes_have_the_configured_distribution(magnitude, mean, std):
    config = SyntheticConfig(magnitude=magnitude, magnitude_scale=2.0, frequency="uniform")
    codes = SyntheticData(config).sample(50_000, generator=0).codes
    values = codes[codes > 0].double()
    assert values.mean().item() == pytest.approx(
        2 * mean, abs=5 * 2 * std / len(values) ** 0.5 + 1e-9
    )
    assert values.std().item() == pytest.approx(2 * std, rel=0.02, abs=1e-9)


def test_coherence_reaches_the_data_dictionary():
    plain = SyntheticData(SyntheticConfig(n_features=64, d=32)).dictionary
    coherent = SyntheticData(SyntheticConfig(n_features=64, d=32, coherence=0.6)).dictionary
    assert mean_offdiag((coherent @ coherent.T).abs()) > mean_offdiag((plain @ plain.T).abs()) + 0.3


# ---------------------------------------------------------------- hedging toy


def test_hedging_toy_statistics_and_geometry():
    batch = hedging_toy(N_STAT, generator=0)
    D, codes = batch.dictionary, batch.codes
    assert batch.x.shape == (N_STAT, 50) and D.shape == (2, 50)
    assert_close(D @ D.T, torch.eye(2))
    assert_close(batch.x, codes @ D)
    parent, child = codes[:, 0] > 0, codes[:, 1] > 0
    assert not (child & ~parent).any()
    assert set(codes.unique().tolist()) <= {0.0, 1.0}
    assert_rate(torch.stack([parent, child]).double().mean(1), torch.tensor([0.25, 0.2]), N_STAT)
    assert_rate(child[parent].double().mean(), 0.8, parent.sum())


def test_hedging_toy_determinism():
    assert torch.equal(hedging_toy(50, generator=1).x, hedging_toy(50, generator=1).x)
    assert not torch.equal(hedging_toy(50, generator=1).x, hedging_toy(50, generator=2).x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=10, d=1), "d must be"),
        (dict(n=10, parent_prob=1.2), "parent_prob"),
        (dict(n=10, child_prob_given_parent=-0.2), "child_prob_given_parent"),
    ],
)
def test_hedging_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hedging_toy(**kwargs, generator=0)


def test_eigenvector_hedging_is_the_top_eigenvector_ratio():
    # Parent on in 4 rows, child in 1 of them: E[c c^T] = [[1, q], [q, q]] with q = 1/4, whose top
    # eigenvalue is ((1 + q) + sqrt((1 - q)^2 + 4 q^2)) / 2 and eigenvector ratio (lambda - 1) / q.
    codes = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    q = 0.25
    lam = (1 + q + math.sqrt((1 - q) ** 2 + 4 * q * q)) / 2
    assert eigenvector_hedging(codes) == pytest.approx((lam - 1) / q, abs=1e-12)  # 0.30278
    assert eigenvector_hedging(torch.tensor([[2.0, 0.0], [3.0, 0.0]])) == 0.0  # child never fires
    with pytest.raises(ValueError, match=r"codes must be \[n, 2\]"):
        eigenvector_hedging(torch.ones(3, 3))
    with pytest.raises(ValueError, match="codes must be with a parent sample"):
        eigenvector_hedging(torch.zeros(3, 2))


def test_feature_roles_follow_the_layout():
    config = SyntheticConfig(n_features=10, n_parents=2, children_per_parent=1, correlated_pairs=2)
    roles = feature_roles(SyntheticData(config))
    assert (
        roles.tolist()
        == ["parent"] * 2 + ["child"] * 2 + ["co-occurring pair"] * 4 + ["independent"] * 2
    )
    assert set(roles) <= set(ROLES)


def test_generator_type_is_checked():
    with pytest.raises(TypeError, match="generator"):
        hedging_toy(10, generator=1.5)
