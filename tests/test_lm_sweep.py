"""Scoring SAEs on a language model's activations (tiny Llama)."""

import pytest
import torch

from saelib.data import TensorBatches
from saelib.evaluation import Run
from saelib.lm.model import resid_hook
from saelib.lm.splice import next_token_loss
from saelib.lm.sweep import LMScorer, ScaledBatches, activation_scale, norm_limit, train_runs
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig

HOOK = resid_hook(1)


def test_activation_scale_gives_mean_square_norm_d_in():
    x = torch.randn(500, 8) * 7 + 3
    s = activation_scale(x)
    assert (s * x).pow(2).sum(-1).mean().item() == pytest.approx(8, rel=1e-5)
    with pytest.raises(ValueError, match="all zeros"):
        activation_scale(torch.zeros(3, 2))


def test_scaled_batches_resume_where_they_left_off():
    x = torch.randn(64, 4)
    plain, scaled = TensorBatches(x, 8, seed=1), ScaledBatches(TensorBatches(x, 8, seed=1), 2.0)
    torch.testing.assert_close(next(scaled.iter_from(5)), 2.0 * next(plain.iter_from(5)))
    torch.testing.assert_close(next(iter(scaled)), 2.0 * next(iter(plain)))


def test_norm_limit_and_outlier_rows_dropped():
    x = torch.ones(9, 4)  # norm 2
    x[3] *= 100
    assert norm_limit(x, 10.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="ratio must be positive"):
        norm_limit(x, 0)
    batches = ScaledBatches(TensorBatches(x, 9, shuffle=False), 0.5, max_norm=norm_limit(x, 10.0))
    out = next(iter(batches))
    assert out.shape == (8, 4) and torch.equal(out, torch.full((8, 4), 0.5))


def test_scorer_leaves_outliers_out_and_passes_them_through(tiny_lm):
    model, _ = tiny_lm
    from saelib.lm.model import residual_stream

    tokens = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(5))
    x = residual_stream(model, tokens, 1)[:, 1:].reshape(-1, 32)
    norms = x.norm(dim=-1)
    limit = norms.median().item()  # half the tokens count as outliers here
    s = LMScorer(model, HOOK, x, tokens, activation_scale(x), skip_first=1, max_norm=limit)
    assert len(s.x_eval) == int((norms <= limit).sum()) < len(x)
    sae = make_sae(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4))
    out = s.reconstruction(sae)(x)
    torch.testing.assert_close(out[norms > limit], x[norms > limit])
    assert not torch.allclose(out[norms <= limit], x[norms <= limit])


@pytest.fixture(scope="module")
def scorer(tiny_lm):
    model, _ = tiny_lm
    tokens = torch.randint(0, 64, (6, 12), generator=torch.Generator().manual_seed(5))
    from saelib.lm.model import residual_stream

    x = residual_stream(model, tokens, 1)[:, 1:].reshape(-1, 32)
    return LMScorer(model, HOOK, x, tokens[:3], activation_scale(x), skip_first=1)


def test_scorer_unscales_the_reconstruction(scorer):
    sae = make_sae(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4))
    x = scorer.x_eval[:10]
    expected = sae.eval()(x * scorer.scale).x_hat / scorer.scale
    torch.testing.assert_close(scorer.reconstruction(sae)(x), expected)
    assert scorer.clean == next_token_loss(scorer.lm, scorer.tokens)
    identity = scorer.losses(lambda x: x.clone())
    assert identity["delta_loss"] == 0.0 and identity["ce_loss_recovered"] == 1.0


def test_train_runs_trains_and_scores_each_run(scorer):
    cfg = TrainConfig(n_steps=20, lr=1e-2, progress=False)
    runs = [
        Run(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=k), cfg, {"knob": k})
        for k in (2, 8)
    ]
    table, saes = train_runs(
        runs, lambda run: scorer.scaled(TensorBatches(scorer.x_eval, 16)), scorer, progress=False
    )
    assert list(table["knob"]) == [2, 8] and len(saes) == 2
    assert table["l0"].tolist() == pytest.approx([2.0, 8.0])
    assert (table["fvu"] < 1).all() and table.loc[1, "fvu"] < table.loc[0, "fvu"]
    for column in ("delta_loss", "ce_loss_recovered", "dead_fraction", "seconds"):
        assert column in table
