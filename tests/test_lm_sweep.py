"""Scoring SAEs on a language model's activations (tiny Llama)."""

import numpy as np
import pandas as pd
import pytest
import torch

from saelib.coding.ito import sae_ito
from saelib.data import TensorBatches
from saelib.evaluation import Run, sweep
from saelib.lm.model import resid_hook, residual_stream
from saelib.lm.site import Site, activation_scale, norm_limit
from saelib.lm.splice import mean_ablation, next_token_loss, sequence_losses
from saelib.lm.sweep import LMScorer, ScaledBatches, ito_table, train_config, value_at
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig

HOOK = resid_hook(1)


def _site(scale=2.0, max_norm=None, model="m"):
    return Site(model, HOOK, scale, max_norm, skip_first=1)


def test_scaled_batches_resume_where_they_left_off():
    x = torch.randn(64, 4)
    plain = TensorBatches(x, 8, seed=1)
    scaled = ScaledBatches(TensorBatches(x, 8, seed=1), _site())
    torch.testing.assert_close(next(scaled.iter_from(5)), 2.0 * next(plain.iter_from(5)))
    torch.testing.assert_close(next(iter(scaled)), 2.0 * next(iter(plain)))


def test_scaled_batches_drop_outlier_rows():
    x = torch.ones(9, 4)  # norm 2
    x[3] *= 100
    site = _site(scale=0.5, max_norm=norm_limit(x, 10.0))
    out = next(iter(ScaledBatches(TensorBatches(x, 9, shuffle=False), site)))
    assert out.shape == (8, 4) and torch.equal(out, torch.full((8, 4), 0.5))


def _x(model, tokens):
    return residual_stream(model, tokens, 1)[:, 1:].reshape(-1, 32)


def test_scorer_leaves_outliers_out_and_passes_them_through(tiny_lm):
    model, _ = tiny_lm
    tokens = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(5))
    x = _x(model, tokens)
    norms = x.norm(dim=-1)
    limit = norms.median().item()  # half the tokens count as outliers here
    site = _site(activation_scale(x), limit, model.name)
    s = LMScorer(model, site, x, tokens)
    assert len(s.x_eval) == int((norms <= limit).sum()) < len(x)
    sae = make_sae(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4))
    out = s.reconstruction(sae)(x)
    torch.testing.assert_close(out[norms > limit], x[norms > limit])
    assert not torch.allclose(out[norms <= limit], x[norms <= limit])


def test_scorer_refuses_another_models_site(tiny_lm):
    model, _ = tiny_lm
    with pytest.raises(ValueError, match="site.model must be the model's name 'tiny-llama'"):
        LMScorer(model, _site(model="gpt2"), torch.zeros(4, 32), torch.zeros(2, 4).long())


@pytest.fixture(scope="module")
def scorer(tiny_lm):
    model, _ = tiny_lm
    tokens = torch.randint(0, 64, (6, 12), generator=torch.Generator().manual_seed(5))
    x = _x(model, tokens)
    return LMScorer(model, _site(activation_scale(x), model=model.name), x, tokens[:3])


def test_scorer_unscales_the_reconstruction(scorer):
    sae = make_sae(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4))
    x = scorer.x_eval[:10]
    scale = scorer.site.scale
    expected = sae.eval()(x * scale).x_hat / scale
    sae.train()
    torch.testing.assert_close(scorer.reconstruction(sae)(x), expected)
    assert sae.training  # mode restored
    assert scorer.clean == next_token_loss(scorer.lm, scorer.tokens, skip_first=1)
    identity = scorer.losses(lambda x: x.clone())
    assert identity["delta_loss"] == 0.0 and identity["ce_loss_recovered"] == 1.0


def test_sweep_scored_by_the_scorer(scorer):
    cfg = TrainConfig(n_steps=20, lr=1e-2, progress=False)
    runs = [
        Run(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=k), cfg, {"knob": k})
        for k in (2, 8)
    ]
    data = scorer.scaled(TensorBatches(scorer.x_eval, 16))
    table, saes = sweep(runs, lambda run: data, scorer.score, progress=False)
    assert list(table["knob"]) == [2, 8] and len(saes) == 2
    assert table["l0"].tolist() == pytest.approx([2.0, 8.0])
    assert (table["fvu"] < 1).all() and table.loc[1, "fvu"] < table.loc[0, "fvu"]
    for column in ("delta_loss", "ce_loss_recovered", "dead_fraction", "seconds"):
        assert column in table


def test_score_codes_is_the_metrics_row_plus_losses(scorer):
    x = scorer.site.prepare(scorer.x_eval)
    codes = torch.zeros(len(x), 5)
    codes[:, 0] = 1.0  # one active latent everywhere: l0 1, four dead latents, one dense
    mean = x.mean(0, keepdim=True).expand_as(x)
    row = scorer.score_codes(codes, mean, lambda raw: raw.clone())
    assert row["fvu"] == pytest.approx(1.0) and row["explained_variance"] == pytest.approx(0.0)
    assert (row["l0"], row["dead_fraction"], row["dense_fraction"]) == (1.0, 0.8, 0.2)
    assert row["delta_loss"] == 0.0 and "shrinkage" in row


def test_ito_table_codes_each_topk_sae_with_the_solver(scorer):
    cfgs = [SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4), SAEConfig(32, 64, "relu")]
    saes = [make_sae(cfg) for cfg in cfgs]
    table = pd.DataFrame({"architecture": ["topk", "relu"], "knob": [4.0, 0.5]})
    ito = ito_table(scorer, table, saes)
    assert list(ito["architecture"]) == ["topk+ITO"] and ito["knob"].tolist() == [4]
    x = scorer.site.prepare(scorer.x_eval)
    direct = sae_ito(saes[0], x, "gradient_pursuit", l0=4)
    assert ito.loc[0, "l0"] == pytest.approx(4.0)
    fvu = ((x - direct.x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()
    assert ito.loc[0, "fvu"] == pytest.approx(fvu, rel=1e-5)
    assert ito.loc[0, "spliced_loss"] != scorer.clean
    with pytest.raises(ValueError, match="saes must be one SAE per table row"):
        ito_table(scorer, table, saes[:1])


def test_train_config_is_the_recipe():
    cfg = train_config(0.5, n_steps=100, lr=1e-3, aux_k=8, device="cpu")
    assert (cfg.n_steps, cfg.lr, cfg.sparsity_coeff, cfg.aux_k) == (100, 1e-3, 0.5, 8)
    assert (cfg.lr_decay_steps, cfg.sparsity_warmup_steps, cfg.init_b_dec) == (20, 10, "mean")
    assert train_config(n_steps=100, lr=1e-3, lr_decay_steps=0).lr_decay_steps == 0


def test_value_at_reads_the_one_matching_row():
    table = pd.DataFrame({"architecture": ["topk", "topk", "relu"], "knob": [8, 32, 8]})
    table["fvu"] = [0.3, 0.1, 0.5]
    assert value_at(table, "fvu", architecture="topk", knob=32) == 0.1
    assert value_at(table, "fvu", architecture="relu") == 0.5
    with pytest.raises(ValueError, match=r"where must be .*\(2 do\)"):
        value_at(table, "fvu", architecture="topk")
    with pytest.raises(ValueError, match=r"\(0 do\)"):
        value_at(table, "fvu", knob=4)
    stacked = pd.concat([table.iloc[:1].assign(variant="a"), table.iloc[:1].assign(variant="b")])
    stacked.loc[stacked["variant"] == "b", "fvu"] = 0.9  # a repeated index, as after a concat
    assert value_at(stacked, "fvu", variant="b") == 0.9


def test_baseline_is_the_clean_zero_and_mean_ablated_losses(scorer):
    base, kw = scorer.baseline, dict(skip_first=1)
    assert base.clean.tolist() == pytest.approx(
        sequence_losses(scorer.lm, scorer.tokens, **kw).tolist(), rel=1e-12
    )
    zero = next_token_loss(scorer.lm, scorer.tokens, HOOK, torch.zeros_like, **kw)
    mean = next_token_loss(scorer.lm, scorer.tokens, HOOK, mean_ablation(scorer.x_eval), **kw)
    assert (base.zero, base.mean) == pytest.approx((zero, mean), rel=1e-12)


def test_losses_recover_against_both_ablations(scorer):
    base = scorer.baseline
    out = scorer.losses(mean_ablation(scorer.x_eval))  # the mean ablation itself
    assert out["spliced_loss"] == pytest.approx(base.mean, rel=1e-9)
    assert out["ce_recovered_mean"] == pytest.approx(0.0, abs=1e-9)
    zero_rec = (base.zero - base.mean) / (base.zero - scorer.clean)
    assert out["ce_loss_recovered"] == pytest.approx(zero_rec, rel=1e-9)
    assert out["delta_low"] < out["delta_loss"] < out["delta_high"]


def test_a_given_baseline_is_used_and_checked(scorer):
    base = scorer.baseline
    again = LMScorer(scorer.lm, scorer.site, scorer.x_eval, scorer.tokens, baseline=base)
    assert again.clean == scorer.clean and again.baseline is base
    with pytest.raises(ValueError, match="one loss per sequence"):
        LMScorer(scorer.lm, scorer.site, scorer.x_eval, scorer.tokens[:2], baseline=base)


def test_score_without_splice_has_no_losses(scorer):
    sae = make_sae(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4))
    row = scorer.score(sae, splice=False)
    assert "fvu" in row and "delta_loss" not in row


def test_ito_table_splices_only_the_given_knobs(scorer):
    cfg = TrainConfig(n_steps=5, lr=1e-2, progress=False)
    runs = [Run(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=k), cfg, {"knob": k})
            for k in (2, 4)]  # fmt: skip
    data = scorer.scaled(TensorBatches(scorer.x_eval, 16))
    table, saes = sweep(runs, lambda run: data, scorer.score, progress=False)
    ito = ito_table(scorer, table, saes, splice=[4]).set_index("knob")
    assert np.isnan(ito.loc[2, "delta_loss"]) and np.isfinite(ito.loc[4, "delta_loss"])
