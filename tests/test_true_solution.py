"""Tests for saelib.toys.true_solution: the objective, and SAEs built on a known dictionary."""

import pytest
import torch

from saelib.coding.lasso import fista
from saelib.saes import SAEConfig
from saelib.toys.composed import composed_sets
from saelib.toys.true_solution import (
    best_encoder,
    objective,
    reference,
    sae_with_dictionary,
    sparse_coding_bound,
)

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


def test_errors():
    with pytest.raises(
        ValueError, match=r"dictionary must be a tensor of shape \[4, 2\] \[d_sae, d_in\]"
    ):
        sae_with_dictionary(CFG, torch.eye(2))
    with pytest.raises(ValueError, match="untied ReLU"):
        best_encoder(SAEConfig(d_in=2, d_sae=4, tied=True), TOY.batch.dictionary, TOY.batch.x, 0.1)


# -- exact references -------------------------------------------------------------------------
def _soft_threshold(dictionary, lam):
    return _soft_threshold_cfg(CFG, dictionary, lam)


@pytest.mark.parametrize("which", ["true", "composed"])
def test_soft_threshold_encoder_is_the_lasso_solution_in_2d(which):
    # Orthonormal atoms and their negatives: the exact sparse codes are max(<d, x> - lam/2, 0);
    # checked against the library's FISTA (an independent solver) on the same problem.
    lam = 0.3
    D = TOY.batch.dictionary if which == "true" else TOY.composed
    codes = _soft_threshold(D, lam).encode(TOY.batch.x).detach()
    ref = fista(D.double(), TOY.batch.x.double(), lam / 2, nonneg=True, max_iter=5000, tol=1e-12)
    torch.testing.assert_close(codes.double(), ref.codes, atol=1e-5, rtol=0)


@pytest.mark.parametrize("d, shape", [(2, (2, 2)), (8, (2, 2)), (16, (3, 3))])
def test_bound_is_below_every_encoder_and_tight_for_the_best(d, shape):
    toy = composed_sets(1024, n_sets=shape[0], set_size=shape[1], d=d, generator=3)
    cfg = SAEConfig(d_in=d, d_sae=shape[0] * shape[1], seed=1)
    D, x, lam = toy.batch.dictionary, toy.batch.x, 0.2
    bound = sparse_coding_bound(D, x, lam)
    best, value, grad = best_encoder(cfg, D, x, lam)
    assert value == pytest.approx(objective(best.double(), x.double(), lam)["total"], rel=1e-6)
    assert bound <= value + 1e-9  # a lower bound, for the best encoder ...
    for start in (sae_with_dictionary(cfg, D), _soft_threshold_cfg(cfg, D, lam)):
        assert bound <= objective(start, x, lam)["total"] + 1e-6  # ... and for any other
    assert grad < 1e-4  # L-BFGS ended at a stationary point
    assert (value - bound) / value < 0.02  # the encoder is nearly as good as free codes here
    if d == 2:  # orthonormal with negatives: the encoder can be exactly optimal
        assert (value - bound) / value < 1e-4


def _soft_threshold_cfg(cfg, D, lam):
    sae = sae_with_dictionary(cfg, D)
    with torch.no_grad():
        sae.b_enc.fill_(-lam / 2)
    return sae


def test_bound_matches_a_long_alternating_solve():
    # The joint problem over (b, codes) solved independently by many alternating rounds of
    # exact b and FISTA codes: its value must sit just above the dual bound.
    toy = composed_sets(512, d=8, generator=4)
    D, x, lam = toy.batch.dictionary.double(), toy.batch.x.double(), 0.2
    b, codes = x.mean(0), None
    for _ in range(400):
        codes = fista(
            D, x, lam / 2, nonneg=True, bias=b, init=codes, max_iter=2000, tol=1e-12
        ).codes
        b = (x - codes @ D).mean(0)
    primal = float(((x - b - codes @ D) ** 2).sum(1).mean() + lam * codes.sum(1).mean())
    bound = sparse_coding_bound(toy.batch.dictionary, toy.batch.x, lam)
    assert bound <= primal + 1e-12
    assert primal - bound < 1e-5 * primal


def test_reference_reports_the_gap():
    train, test = composed_sets(1024, d=8, generator=5), composed_sets(512, d=8, generator=6)
    cfg = SAEConfig(d_in=8, d_sae=4)
    ref = reference(cfg, train.batch.dictionary, train.batch.x, test.batch.x, 0.1)
    assert torch.equal(
        ref.sae.W_dec.detach(), sae_with_dictionary(cfg, train.batch.dictionary).W_dec.detach()
    )
    assert ref.bound <= ref.objective and ref.gap == (ref.objective - ref.bound) / ref.objective
    with pytest.raises(ValueError, match="untied ReLU"):
        best_encoder(
            SAEConfig(d_in=8, d_sae=4, architecture="gated"),
            train.batch.dictionary,
            train.batch.x,
            0.1,
        )
