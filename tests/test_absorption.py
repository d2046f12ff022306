"""Chanin et al.'s absorption on known parent and child features, against hand-computed cases."""

import math

import pytest
import torch

from saelib.toys.absorption import chanin_absorption

S = math.sqrt(2)


def _case():
    """Parent e0 with child e1 in 3 dimensions; latents: the parent's (e0), one mixing parent
    and child ((e0 + e1) / sqrt 2), and an unrelated one (e2)."""
    true_dict = torch.eye(3)[:2]
    W_dec = torch.tensor([[1.0, 0, 0], [1 / S, 1 / S, 0], [0, 0, 1.0]])
    codes = torch.tensor([[1.0, 1], [1, 1], [2, 1], [1, 0], [1, 0], [0, 0]])
    f = torch.tensor([
        [0.0, S, 0],  # main silent, the mixed latent carries all of the parent: full absorption
        [1, 0, 0],  # main carries all of it: none
        [1, S, 0],  # main carries 1 of 2, the mixed latent 1: fraction 0.5, not full
        [0, 0, 0],  # parent alone, main silent
        [1, 0, 0],  # parent alone, main fires
        [0, 0, 1],  # no parent
    ])  # fmt: skip
    return codes, f, true_dict, W_dec


def test_hand_computed_case():
    codes, f, true_dict, W_dec = _case()
    ab = chanin_absorption(codes, f, true_dict, W_dec, torch.tensor([0]), torch.tensor([[1]]),
                           torch.tensor([0]))  # fmt: skip
    assert ab.full_rate == pytest.approx(1 / 3)
    assert ab.fraction == pytest.approx((1 + 0 + 0.5) / 3)
    assert ab.parent_miss == pytest.approx(1 / 3)
    assert ab.parent_alone_miss == pytest.approx(0.5)


def test_thresholds_decide():
    """An absorbing latent whose projection is below the proportion, or whose cosine is below
    the threshold, does not count."""
    codes, f, true_dict, W_dec = _case()
    args = (codes, f, true_dict, W_dec, torch.tensor([0]), torch.tensor([[1]]), torch.tensor([0]))
    assert chanin_absorption(*args, cos_threshold=0.8).full_rate == 0.0
    high = chanin_absorption(*args, proportion=0.9)  # the mixed latent's 1 is not >= 0.9 * 2
    assert high.full_rate == pytest.approx(1 / 3) and high.fraction == pytest.approx(1 / 3)
    assert chanin_absorption(*args, fraction_cos_threshold=0.9).fraction == 0.0


def test_no_child_samples_give_nan():
    codes, f, true_dict, W_dec = _case()
    codes[:, 1] = 0
    ab = chanin_absorption(codes, f, true_dict, W_dec, torch.tensor([0]), torch.tensor([[1]]),
                           torch.tensor([0]))  # fmt: skip
    assert math.isnan(ab.full_rate) and math.isnan(ab.parent_miss)
    assert ab.parent_alone_miss == pytest.approx(2 / 5)  # every sample with the parent


def test_shapes_are_checked():
    codes, f, true_dict, W_dec = _case()
    with pytest.raises(ValueError, match="W_dec"):
        chanin_absorption(codes, f, true_dict, W_dec[:, :2], torch.tensor([0]),
                          torch.tensor([[1]]), torch.tensor([0]))  # fmt: skip
    with pytest.raises(ValueError, match="main_latent"):
        chanin_absorption(codes, f, true_dict, W_dec, torch.tensor([0]), torch.tensor([[1]]),
                          torch.tensor([0, 1]))  # fmt: skip
