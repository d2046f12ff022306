"""Tests for saelib.toys.true_solution: the objective, and SAEs built on a known dictionary."""

import pytest
import torch

from saelib.data import TensorBatches
from saelib.saes import SAEConfig
from saelib.toys.composed import composed_sets
from saelib.toys.true_solution import objective, sae_with_dictionary, true_feature_sae
from saelib.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = composed_sets(2048, d=2, generator=0)
CFG = SAEConfig(d_in=2, d_sae=4, architecture="relu", seed=0)


@pytest.mark.parametrize("arch", ["relu", "gated", "topk"])
def test_objective_is_the_loss_over_all_rows(arch):
    cfg = SAEConfig(d_in=2, d_sae=4, architecture=arch, k=2 if arch == "topk" else None)
    sae = sae_with_dictionary(cfg, TOY.composed)
    x = TOY.batch.x[:100]
    with torch.no_grad():
        total, terms, _ = sae.loss(x, 0.3)
    got = objective(sae, x, 0.3, batch_size=7)  # chunks of unequal size
    assert got["total"] == pytest.approx(float(total), rel=1e-5)
    assert got["mse"] == pytest.approx(float(terms["mse"]), rel=1e-5)


def test_sae_with_true_dictionary_reconstructs_the_toy_exactly():
    # Antipodal unit features, encoder = decoder transpose, zero biases: f = codes, exact.
    sae = sae_with_dictionary(CFG, TOY.batch.dictionary)
    out = objective(sae, TOY.batch.x, 0.1)
    assert out["mse"] < 1e-10
    assert out["sparsity"] == pytest.approx(float(TOY.batch.codes.sum(1).mean()), rel=1e-5)


def test_true_feature_sae_keeps_the_decoder_and_lowers_the_objective():
    lam = 0.3
    train = TrainConfig(n_steps=150, lr=3e-3, sparsity_coeff=lam, progress=False)
    ref = true_feature_sae(CFG, TOY.batch.dictionary, train, TensorBatches(TOY.batch.x, 128))
    assert torch.equal(ref.W_dec.detach(), TOY.batch.dictionary)
    start = objective(sae_with_dictionary(CFG, TOY.batch.dictionary), TOY.batch.x, lam)
    assert objective(ref, TOY.batch.x, lam)["total"] < start["total"] - 1e-3
    assert ref.W_dec.requires_grad


def test_errors():
    with pytest.raises(
        ValueError, match=r"dictionary must be a tensor of shape \[4, 2\] \[d_sae, d_in\]"
    ):
        sae_with_dictionary(CFG, torch.eye(2))
    with pytest.raises(ValueError, match="sae.cfg.tied must be False"):
        true_feature_sae(
            SAEConfig(d_in=2, d_sae=4, tied=True), TOY.batch.dictionary,
            TrainConfig(n_steps=1), TensorBatches(TOY.batch.x, 128),
        )  # fmt: skip
