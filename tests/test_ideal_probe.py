"""Probing on ground truth: labels from true features, the ideal SAE's probes."""

import numpy as np
import pytest
import torch

from saelib.toys.ideal_probe import any_of_labels, feature_labels, probe_coders, random_split


def _codes(n=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(n, 6, generator=g) < 0.2
    return torch.where(active, torch.rand(n, 6, generator=g) + 0.1, 0.0)


def test_labels():
    codes = torch.tensor([[0.0, 1, 0], [2, 0, 0], [0, 0, 0]])
    assert feature_labels(codes, [1])["feature 1"].tolist() == [1, 0, 0]
    assert any_of_labels(codes, [[0, 1]])["any of 0+1"].tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="features"):
        feature_labels(codes, [3])


def test_split_is_a_partition():
    train, val, test = random_split(100, seed=1)
    assert (len(train), len(val), len(test)) == (60, 20, 20)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))


def test_ideal_sae_probes():
    """On the true codes a 1-sparse probe separates a single feature perfectly; an any-of
    label of two features needs k = 2."""
    codes = _codes()
    x = codes @ torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    labels = feature_labels(codes, [0]) | any_of_labels(codes, [[1, 2]])
    table = probe_coders(x, {"ideal": codes}, labels, ks=(1, 2), seed=0)
    auc = table.set_index(["label", "coder", "k"])["test_auc"]
    assert auc[("feature 0", "ideal", 1)] == pytest.approx(1.0)
    assert auc[("any of 1+2", "ideal", 1)] < 0.9
    assert auc[("any of 1+2", "ideal", 2)] > 0.99
    assert set(table["coder"]) == {"ideal", "dense"}


def test_rare_labels_are_skipped():
    codes = _codes(n=200)
    codes[:, 0] = 0
    codes[0, 0] = 1.0  # one positive: cannot be split
    table = probe_coders(codes, {"ideal": codes}, feature_labels(codes, [0, 1]), seed=0)
    assert set(table["label"]) == {"feature 1"}
