"""Matching-pursuit SAE: codes against saelib's inference-time matching pursuit (an
independent implementation), the stopping rules by hand, gradients against finite
differences and the config's refusals (its planted-dictionary recovery is in
tests/test_recovery.py with the other architectures)."""

import pytest
import torch
from conftest import assert_matches_finite_differences

from saelib import losses
from saelib.coding.pursuit import matching_pursuit
from saelib.saes import SAEConfig, make_sae
from saelib.saes.mp import matching_pursuit_codes
from saelib.training import TrainConfig, Trainer

D_IN, D_SAE = 10, 40


def unit_sae(steps=4, dtype=torch.float64, seed=0, **kw):
    sae = make_sae(SAEConfig(D_IN, D_SAE, "mp", mp_steps=steps, seed=seed, **kw)).to(dtype)
    sae.normalize_decoder_()  # unit atoms in this dtype (the pursuit assumes them)
    with torch.no_grad():
        sae.b_dec.copy_(0.3 * torch.randn(D_IN, generator=torch.Generator().manual_seed(seed)))
    return sae


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_codes_equal_inference_time_matching_pursuit(steps):
    # with no early stop, the SAE's encoder is saelib's non-negative matching pursuit
    sae = unit_sae(steps, mp_residual_threshold=0.0, mp_stop_on_repeat=False)
    x = torch.randn(64, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = matching_pursuit(sae.W_dec, x, steps, nonneg=True, bias=sae.b_dec)
        out = sae(x)
    torch.testing.assert_close(out.f, ref.codes, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.x_hat, ref.x_hat, rtol=1e-12, atol=1e-12)


def test_stopping_rules_by_hand():
    W = torch.eye(4, dtype=torch.float64)  # orthonormal atoms
    x = torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.5]], dtype=torch.float64)
    # sample 0: picks atom 0 (2), atom 1 (1), then nothing correlates: support unchanged
    # sample 1: picks atom 3 (0.5); atom 2 correlates negatively, so it is never picked
    f = matching_pursuit_codes(x, W, max_steps=10, stop_on_repeat=True)
    expected = torch.tensor([[2.0, 1.0, 0, 0], [0, 0, 0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(f, expected)
    # a residual threshold of 1.5 stops sample 0 after its first step (|r| = 1 < 1.5)
    f = matching_pursuit_codes(x, W, max_steps=10, residual_threshold=1.5, stop_on_repeat=False)
    assert f[0].tolist() == [2.0, 0.0, 0.0, 0.0]
    # a step cap
    assert matching_pursuit_codes(x[:1], W, max_steps=1)[0].tolist() == [2.0, 0.0, 0.0, 0.0]


def test_stops_early_and_counts_at_most_the_steps():
    sae = unit_sae(steps=None)  # up to d_in steps
    x = torch.randn(256, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        f = sae.encode(x)
    l0 = (f > 0).sum(1)
    assert l0.max() <= D_IN and (f >= 0).all()
    assert sae.max_steps == D_IN


def test_gradients_against_finite_differences():
    sae = unit_sae(steps=3)
    x = torch.randn(6, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def loss():
        return losses.mse(x, sae(x).x_hat)

    params = list(sae.parameters())
    assert_matches_finite_differences(params, loss, torch.autograd.grad(loss(), params))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"mp_steps": 0}, "mp_steps"),
        ({"mp_residual_threshold": -1.0}, "mp_residual_threshold"),
        ({"mp_stop_on_repeat": 1}, "mp_stop_on_repeat"),
        ({"apply_b_dec_to_input": False}, "apply_b_dec_to_input"),
        ({"tied": True}, "tied"),
    ],
)
def test_config_refusals(kw, match):
    with pytest.raises(ValueError, match=match):
        SAEConfig(D_IN, D_SAE, "mp", **kw)


def test_trainer_requires_the_unit_decoder():
    sae = make_sae(SAEConfig(D_IN, D_SAE, "mp"))
    with pytest.raises(ValueError, match="normalize_decoder"):
        Trainer(sae, TrainConfig(n_steps=10, normalize_decoder=False))
