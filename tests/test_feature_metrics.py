"""Tests for saelib.toys.feature_metrics on hand-built dictionaries and codes with known answers."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from saelib.toys.feature_metrics import (
    PAIR_KINDS,
    absorption,
    composite_kinds,
    composites,
    hedging,
    nearest_neighbour_cos,
    pair_kinds,
    parent_latents,
)

E = torch.eye(6)


def unit(v):
    return F.normalize(torch.as_tensor(v, dtype=torch.float32), dim=-1)


# ---------------------------------------------------------------- nearest neighbours


def test_nearest_neighbour_cos_hand_built():
    atoms = torch.stack([E[0], unit(E[0] + E[1]), E[2]])
    got = nearest_neighbour_cos(atoms)
    s = 2**-0.5
    np.testing.assert_allclose(got.numpy(), [s, s, 0.0], atol=1e-6)
    assert nearest_neighbour_cos(-atoms).allclose(got)  # |cos|: signs do not matter


def test_nearest_neighbour_cos_needs_two_rows():
    with pytest.raises(ValueError, match="atoms must be at least 2 rows"):
        nearest_neighbour_cos(E[:1])


# ---------------------------------------------------------------- composites


def test_composites_hand_built():
    true = E[:4]
    learned = torch.stack(
        [
            E[0],  # a true feature
            unit(E[0] + E[1]),  # composite of features 0 and 1
            unit(E[0] - E[1]),  # a mix with a negative weight: not a composite
            unit(E[2] + 2 * E[3]),  # composite, single |cos| 0.894 < 0.9
            E[5],  # orthogonal to every feature
            unit(E[0] + 0.2 * E[1]),  # mostly one feature: single |cos| 0.98
        ]
    )
    res = composites(true, learned)
    assert res.is_composite.tolist() == [False, True, False, True, False, False]
    assert res.fraction == pytest.approx(2 / 6)
    assert res.pair[1].tolist() == [0, 1] and res.pair[3].tolist() == [2, 3]
    np.testing.assert_allclose(res.pair_cos[[1, 3]].numpy(), [1, 1], atol=1e-6)
    assert res.pair_cos[4] == 0  # no pair has a positive weight on both atoms
    alive = torch.tensor([True, True, False, False, True, True])
    assert composites(true, learned, alive=alive).fraction == pytest.approx(1 / 4)


def test_composites_antipodal_features_in_two_dims():
    # The composed toy: x1 = e1, x2 = -e1, y1 = e2, y2 = -e2; the (x1, x2) pair is singular.
    true = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    learned = torch.stack([unit([1.0, 1.0]), unit([-1.0, 1.0]), torch.tensor([0.0, 1.0])])
    res = composites(true, learned)
    assert res.is_composite.tolist() == [True, True, False]
    assert res.pair[0].tolist() == [0, 2] and res.pair[1].tolist() == [1, 2]


def test_composites_match_brute_force_nnls():
    g = torch.Generator().manual_seed(0)
    true = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    learned = torch.cat(
        [F.normalize(torch.randn(5, 8, generator=g), dim=1),
         unit(true[1] + 0.7 * true[4])[None], unit(0.4 * true[2] + true[3])[None]]
    )  # fmt: skip
    res = composites(true, learned, single_threshold=1.0, pair_threshold=0.5)
    t, l = true.double().numpy(), learned.double().numpy()
    for j in range(len(l)):
        best = 0.0
        for a, b in itertools.combinations(range(len(t)), 2):
            coef, resid = nnls(t[[a, b]].T, l[j])
            if (coef > 1e-9).all():
                best = max(best, np.sqrt(max(0.0, 1 - resid**2)))
        assert res.pair_cos[j].item() == pytest.approx(best, abs=1e-5), j
    assert res.is_composite[5] and res.is_composite[6]
    assert res.pair[5].tolist() == [1, 4] and res.pair[6].tolist() == [2, 3]


def test_composites_errors():
    with pytest.raises(ValueError, match=r"learned_dict must be \[\*, 6\]"):
        composites(E, torch.ones(2, 5))
    with pytest.raises(ValueError, match="single_threshold must be a number in"):
        composites(E, E, single_threshold=1.5)
    with pytest.raises(ValueError, match="alive must be"):
        composites(E, E, alive=torch.ones(3, dtype=torch.bool))


# ---------------------------------------------------------------- parents, absorption, hedging

PARENTS = torch.tensor([0])
CHILDREN = torch.tensor([[1, 2]])


def test_parent_latents_pick_the_closest_atom():
    learned = torch.stack([E[3], unit(E[0] + 0.1 * E[1]), -E[0]])
    assert parent_latents(E[:4], learned, torch.tensor([0, 3])).tolist() == [1, 0]


def test_absorption_hand_built():
    # columns: parent, child a, child b
    true = torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 0], [0, 0, 0]])
    # latent 0 stands for the parent: silent on both child-a rows and on the child-b row
    learned = torch.tensor([[2.0, 0], [0, 3], [0, 1], [0, 1], [1, 0], [0, 0]])
    res = absorption(true, learned, PARENTS, CHILDREN, torch.tensor([0]))
    assert res.per_child.tolist() == [[1.0, 1.0]]
    assert res.parent_alone_miss.tolist() == [0.0]
    assert res.rate == 1.0
    learned[1, 0] = 1.0  # now it fires on one of the two child-a rows
    res = absorption(true, learned, PARENTS, CHILDREN, torch.tensor([0]))
    assert res.per_child.tolist() == [[0.5, 1.0]] and res.rate == 0.75


def test_absorption_without_child_samples_is_nan():
    true = torch.tensor([[1.0, 0, 0], [1, 0, 0]])
    res = absorption(true, torch.ones(2, 2), PARENTS, CHILDREN, torch.tensor([0]))
    assert res.per_child.isnan().all() and np.isnan(res.rate)


def test_hedging_orthogonal_and_oblique():
    w = unit(E[0] + 0.3 * E[1])
    got = hedging(E[:3], torch.stack([E[2], w]), PARENTS, CHILDREN, torch.tensor([1]))
    np.testing.assert_allclose(got.numpy(), [[0.3, 0.0]], atol=1e-6)
    true = torch.stack([E[0], unit(E[0] + E[1]), E[2]])  # child a leans on the parent
    w = unit(true[0] + 0.5 * true[1] - 0.2 * true[2])
    got = hedging(true, w[None], PARENTS, CHILDREN, torch.tensor([0]))
    np.testing.assert_allclose(got[0, 0].item(), 0.5, atol=1e-5)
    np.testing.assert_allclose(got[0, 1].item(), -0.2 / (1 + 0.5 * 2**-0.5), atol=1e-5)


def test_hedging_is_nan_for_a_latent_pointing_away():
    got = hedging(E[:3], -E[:1], PARENTS, CHILDREN, torch.tensor([0]))
    assert got.isnan().all()


def test_candidate_search_matches_exhaustive_search_on_planted_composites():
    g = torch.Generator().manual_seed(1)
    true = F.normalize(torch.randn(80, 32, generator=g), dim=1)
    planted = F.normalize(true[0:20] + 0.8 * true[20:40], dim=1)  # 20 composites
    learned = torch.cat(
        [planted, true[40:60], F.normalize(torch.randn(20, 32, generator=g), dim=1)]
    )
    fast, full = composites(true, learned), composites(true, learned, candidates=None)
    assert torch.equal(fast.is_composite, full.is_composite)
    assert fast.is_composite[:20].all() and not fast.is_composite[20:40].any()
    assert torch.equal(fast.pair[:20], torch.stack([torch.arange(20), torch.arange(20, 40)], 1))


def test_pair_kinds():
    pair = torch.tensor([[3, 2], [0, 1], [1, 2], [4, 5], [-1, -1], [0, 5]])
    got = pair_kinds(pair, torch.tensor([[2, 3]]), torch.tensor([0]), torch.tensor([[1, 4]]))
    assert got == ["co-occurring", "parent-child", "unrelated", "unrelated", "unrelated"]
    got = pair_kinds(torch.tensor([[1, 4]]), torch.tensor([[2, 3]]), torch.tensor([0]),
                     torch.tensor([[1, 4]]))  # fmt: skip
    assert got == ["siblings"]


def test_composite_kinds_counts_over_dictionaries():
    # True features 0..3 in 4-d: (0, 1) co-occur, 2 is the parent of 3. The first learned
    # dictionary merges the pair and the parent with its child; the second only the pair.
    true = torch.eye(4)
    pair_01, pc_23 = unit(torch.tensor([1.0, 1.0, 0, 0])), unit(torch.tensor([0, 0, 1.0, 0.5]))
    first = torch.stack([pair_01, pc_23, true[0], true[3]])
    second = torch.stack([pair_01, true[2]])
    got = composite_kinds(true, [first, second], torch.tensor([[0, 1]]), torch.tensor([2]),
                          torch.tensor([[3]]))  # fmt: skip
    assert got == {"co-occurring": 2, "parent-child": 1, "siblings": 0, "unrelated": 0}
    assert tuple(got) == PAIR_KINDS
