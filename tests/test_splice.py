"""Splicing a reconstruction into the model: the loss measurements on a tiny Llama."""

import numpy as np
import pytest
import torch
from tiny_models import hf_loss

from saelib import metrics
from saelib.lm.model import resid_hook
from saelib.lm.splice import (
    mean_ablation,
    next_token_loss,
    paired_delta,
    sae_reconstruction,
    sequence_losses,
    spliced_losses,
)
from saelib.saes import SAEConfig, make_sae

HOOK = resid_hook(1)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 64, (6, 12), generator=torch.Generator().manual_seed(1))


def test_clean_loss_matches_hf(tiny_lm, tokens):
    model, hf = tiny_lm
    assert next_token_loss(model, tokens, batch_size=4) == pytest.approx(hf_loss(hf, tokens), 1e-6)


def test_splice_matches_hf_forward_hook(tiny_lm, tokens):
    model, hf = tiny_lm
    w = torch.randn(32, 32, generator=torch.Generator().manual_seed(2)) / 32**0.5
    fn = lambda x: x @ w + 0.1  # noqa: E731  any function of the activation
    ours = next_token_loss(model, tokens, HOOK, fn, batch_size=4)
    assert ours == pytest.approx(hf_loss(hf, tokens, 1, fn), rel=1e-5)
    assert abs(ours - next_token_loss(model, tokens)) > 1e-3  # the splice did change it


def test_identity_gives_zero_delta_and_full_recovery(tiny_lm, tokens):
    model, _ = tiny_lm
    out = spliced_losses(model, tokens, HOOK, lambda x: x.clone())
    assert out["delta_loss"] == 0.0
    assert out["ce_loss_recovered"] == 1.0
    assert out["ablated_loss"] > out["clean_loss"]


def test_zero_reconstruction_equals_zero_ablation(tiny_lm, tokens):
    model, hf = tiny_lm
    out = spliced_losses(model, tokens, HOOK, torch.zeros_like)
    assert out["spliced_loss"] == out["ablated_loss"] and out["ce_loss_recovered"] == 0.0
    assert out["ablated_loss"] == pytest.approx(hf_loss(hf, tokens, 1, torch.zeros_like), 1e-5)


def test_mean_ablation_and_skip_first(tiny_lm, tokens):
    model, hf = tiny_lm
    mean = torch.randn(32, generator=torch.Generator().manual_seed(3))
    out = spliced_losses(
        model, tokens, HOOK, lambda x: mean.expand_as(x), ablation="mean", mean=mean
    )
    assert out["spliced_loss"] == out["ablated_loss"]
    # skip_first keeps position 0 clean: the same as an HF hook replacing positions 1:
    kept = next_token_loss(model, tokens, HOOK, torch.zeros_like, skip_first=1)

    def zero_tail(x):
        return torch.cat([x[:, :1], torch.zeros_like(x[:, 1:])], dim=1)

    assert kept == pytest.approx(hf_loss(hf, tokens, 1, zero_tail), rel=1e-5)


def test_sae_reconstruction_in_eval_mode(tiny_lm, tokens):
    model, _ = tiny_lm
    sae = make_sae(SAEConfig(d_in=32, d_sae=64, architecture="batchtopk", k=4))
    sae.train()
    x = torch.randn(10, 32)
    rec = sae_reconstruction(sae)
    sae.eval()
    expected = sae(x).x_hat
    sae.train()
    torch.testing.assert_close(rec(x), expected)
    assert sae.training  # mode restored
    out = spliced_losses(model, tokens, HOOK, rec)
    assert out["spliced_loss"] != out["clean_loss"]


def test_ce_loss_recovered_formula():
    assert metrics.ce_loss_recovered(2.0, 2.5, 4.0) == pytest.approx(0.75)
    assert metrics.ce_loss_recovered(2.0, 5.0, 4.0) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="ablated loss equals clean loss"):
        metrics.ce_loss_recovered(2.0, 2.5, 2.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ablation="resample"), r"ablation must be one of \['zero', 'mean'\]"),
        (dict(ablation="mean"), "ablation='mean' needs mean"),
        (dict(hook="blocks.7.hook_resid_post"), "hook must be a hook of tiny-llama"),
        (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_input(tiny_lm, tokens, kwargs, match):
    model, _ = tiny_lm
    args = dict(hook=HOOK, reconstruct=torch.zeros_like) | kwargs
    with pytest.raises(ValueError, match=match):
        spliced_losses(model, tokens, **args)


def test_sequence_losses_are_each_sequences_hf_loss(tiny_lm, tokens):
    model, hf = tiny_lm
    per_seq = sequence_losses(model, tokens, batch_size=4)
    assert per_seq.shape == (len(tokens),) and per_seq.dtype == torch.float64
    expected = [hf_loss(hf, tokens[i : i + 1]) for i in range(len(tokens))]
    assert per_seq.tolist() == pytest.approx(expected, rel=1e-5)
    assert next_token_loss(model, tokens) == pytest.approx(per_seq.mean().item(), rel=1e-12)


def test_paired_delta_is_the_t_interval_of_the_differences():
    clean = torch.tensor([2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    spliced = clean + torch.tensor([0.1, 0.3, 0.2, 0.4], dtype=torch.float64)
    out = paired_delta(spliced, clean)
    d = np.array([0.1, 0.3, 0.2, 0.4])  # mean 0.25, sd 0.1291, t_{0.975, 3} = 3.1824
    half = 3.182446305284263 * d.std(ddof=1) / 2
    assert out["delta_loss"] == pytest.approx(0.25)
    assert (out["delta_low"], out["delta_high"]) == pytest.approx((0.25 - half, 0.25 + half))
    with pytest.raises(ValueError, match="two \\[n_seq\\] tensors"):
        paired_delta(spliced[:3], clean)


def test_mean_ablation_replaces_every_row_by_the_mean():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    out = mean_ablation(x)(torch.zeros(3, 2))
    assert torch.equal(out, torch.tensor([[2.0, 4.0]] * 3))
