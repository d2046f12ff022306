"""Encoder-only fits (the amortisation-gap settings): contract, correctness, FLOPs."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from saelib.coding import cost
from saelib.coding.amortisation import (
    EncoderFitConfig,
    code_regression_loss,
    encoder_training,
    fit_encoder,
    set_dictionary_,
    snapshots,
)
from saelib.data import TensorBatches
from saelib.metrics import mcc
from saelib.saes import SAEConfig, make_sae
from saelib.toys.synthetic import SyntheticConfig, SyntheticData, random_dictionary
from saelib.training import TrainConfig, Trainer


def problem(n_features=12, d=6, n=512, seed=0):
    data = SyntheticData(SyntheticConfig(n_features=n_features, d=d, mean_active=2.0, seed=seed))
    return data.sample(n, generator=seed + 1)


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"setting": "known"}, "setting"),
        ({"n_steps": 0}, "n_steps"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"sparsity_coeff": -1.0}, "sparsity_coeff"),
        ({"setting": "known_codes", "sparsity_coeff": 0.1}, "sparsity_coeff"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_rejects_bad_values_by_name(kwargs, name):
    with pytest.raises(ValueError, match=f"EncoderFitConfig.{name} must be"):
        EncoderFitConfig(**kwargs)


def test_set_dictionary_copies():
    sae = make_sae(SAEConfig(d_in=6, d_sae=12))
    D = random_dictionary(12, 6, generator=3)
    with torch.no_grad():
        sae.b_dec.fill_(1.0)
    set_dictionary_(sae, D)
    assert torch.equal(sae.W_dec, D) and torch.equal(sae.b_dec, torch.zeros(6))
    assert sae.W_dec.requires_grad and sae.b_dec.requires_grad  # copying does not freeze
    set_dictionary_(sae, D, bias=torch.arange(6.0))
    assert torch.equal(sae.b_dec, torch.arange(6.0))
    with pytest.raises(ValueError, match=r"dictionary must be a tensor of shape \[12, 6\]"):
        set_dictionary_(sae, D.T)
    with pytest.raises(ValueError, match=r"bias must be None or a tensor of shape \[6\]"):
        set_dictionary_(sae, D, bias=torch.zeros(5))


@pytest.mark.parametrize("train_b_dec", [False, True])
def test_encoder_training_freezes_the_decoder_then_restores(train_b_dec):
    sae = make_sae(SAEConfig(d_in=6, d_sae=12))
    sae.b_dec.requires_grad_(False)  # restored as it was, not forced on
    sae.eval()
    with encoder_training(sae, train_b_dec=train_b_dec):
        assert sae.training and not sae.W_dec.requires_grad
        assert not sae.b_dec.requires_grad  # frozen, or left as it was (off)
        assert sae.W_enc.requires_grad and sae.b_enc.requires_grad
    assert not sae.training and sae.W_dec.requires_grad and not sae.b_dec.requires_grad
    with pytest.raises(RuntimeError), encoder_training(sae):
        raise RuntimeError  # restored on an error too
    assert not sae.training and sae.W_dec.requires_grad


def test_encoder_training_refuses_a_tied_sae():
    sae = make_sae(SAEConfig(d_in=6, d_sae=12, tied=True))
    with pytest.raises(ValueError, match="sae.cfg.tied must be False"), encoder_training(sae):
        pass
    D = random_dictionary(12, 6, generator=3)
    with pytest.raises(ValueError, match="sae.cfg.tied must be False"):
        fit_encoder(sae, torch.randn(8, 6), D, EncoderFitConfig(n_steps=1))
    assert not torch.equal(sae.W_dec, D)  # refused before the copy


def test_fit_encoder_argument_errors():
    batch = problem()
    sae = make_sae(SAEConfig(d_in=6, d_sae=12))
    with pytest.raises(ValueError, match="codes must be given"):
        fit_encoder(sae, batch.x, batch.dictionary, EncoderFitConfig("known_codes", 2))
    with pytest.raises(ValueError, match="codes must be given"):
        fit_encoder(sae, batch.x, batch.dictionary, EncoderFitConfig(n_steps=2), batch.codes)
    with pytest.raises(ValueError, match="x must be a tensor of shape"):
        fit_encoder(sae, batch.x.T, batch.dictionary, EncoderFitConfig(n_steps=2))
    with pytest.raises(ValueError, match="cfg must be an EncoderFitConfig"):
        fit_encoder(sae, batch.x, batch.dictionary, {"n_steps": 2})


# -- the loss -----------------------------------------------------------------------------------
def test_code_regression_loss_hand_computed():
    pre = torch.tensor([[0.5, -1.0, 2.0], [-0.5, 1.0, 0.0]])
    codes = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.0, 0.0]])
    # row 0: (0.5-1)^2 + relu(-1)^2 + 0 = 0.25; row 1: (-0.5-0.5)^2 + relu(1)^2 + 0 = 2
    assert code_regression_loss(pre, codes).item() == pytest.approx((0.25 + 2.0) / 2)


def test_code_regression_loss_is_zero_iff_relu_matches_and_revives_dead_latents():
    codes = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert code_regression_loss(torch.tensor([[1.0, -3.0], [-0.1, 2.0]]), codes) == 0
    pre = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]], requires_grad=True)
    code_regression_loss(pre, codes).backward()
    assert pre.grad[0, 0] < 0 and pre.grad[1, 1] < 0  # pushed up towards the active codes
    dead = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]], requires_grad=True)
    (dead.relu() - codes).pow(2).sum(-1).mean().backward()
    assert torch.equal(dead.grad, torch.zeros(2, 2))  # what the plain loss would give


# -- fitting ------------------------------------------------------------------------------------
def test_known_dictionary_trains_only_the_encoder():
    batch = problem()
    sae = make_sae(SAEConfig(d_in=6, d_sae=12, seed=1))
    W_enc = sae.W_enc.detach().clone()
    losses = fit_encoder(sae, batch.x, batch.dictionary, EncoderFitConfig(n_steps=300, lr=3e-3))
    assert torch.equal(sae.W_dec, batch.dictionary)
    assert torch.equal(sae.b_dec, torch.zeros(6))
    assert not torch.equal(sae.W_enc, W_enc)
    assert losses.shape == (300,) and losses[-50:].mean() < 0.5 * losses[:10].mean()


def test_known_codes_recovers_codes_of_an_orthonormal_dictionary():
    # With orthonormal atoms the codes are a linear function of x (s = x D^T >= 0), so a
    # linear-ReLU encoder can represent them exactly: regression must find them.
    D = random_dictionary(6, 6, orthogonal=True, generator=5)
    codes = problem(n_features=6, d=6, n=2048).codes
    x = codes @ D
    sae = make_sae(SAEConfig(d_in=6, d_sae=6, seed=2))
    fit_encoder(sae, x, D, EncoderFitConfig("known_codes", 1500, 256, 1e-2), codes=codes)
    with torch.no_grad():
        f = sae.encode(x)
    assert (f - codes).pow(2).sum(-1).mean() < 1e-3 * codes.pow(2).sum(-1).mean()
    assert mcc(codes, f).mcc > 0.999


def test_fit_is_deterministic_and_calls_back_every_step():
    batch = problem()
    steps, runs = [], []
    for _ in range(2):
        sae = make_sae(SAEConfig(d_in=6, d_sae=12, architecture="mlp", mlp_hidden=(8,), seed=3))
        cfg = EncoderFitConfig("known_codes", 20, 32, 1e-3, seed=4)
        losses = fit_encoder(
            sae,
            batch.x,
            batch.dictionary,
            cfg,
            batch.codes,
            callback=lambda step, s: steps.append((step, s.training)),
        )
        runs.append((losses, sae.encode(batch.x).detach()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert steps[:20] == [(s, False) for s in range(1, 21)]  # in eval mode, counted from 1
    assert sae.training  # the mode it had before the fit


def test_snapshots_see_the_trainer_after_exactly_that_many_steps():
    batch = problem()
    trainer = Trainer(make_sae(SAEConfig(d_in=6, d_sae=12)), TrainConfig(n_steps=9, progress=False))
    seen = []
    stream = snapshots(
        TensorBatches(batch.x, 64),
        [1, 4, 8],
        lambda s: seen.append((s, trainer.step, torch.is_grad_enabled())),
    )
    trainer.fit(stream)
    assert seen == [(1, 1, False), (4, 4, False), (8, 8, False)]
    with pytest.raises(ValueError, match="at_steps must be integers >= 1"):
        snapshots([], [0], print)


# -- FLOPs --------------------------------------------------------------------------------------
CONFIGS = {
    "relu": {},
    "topk": {"architecture": "topk", "k": 3},
    "jumprelu": {"architecture": "jumprelu"},
    "gated": {"architecture": "gated"},
    "mlp": {"architecture": "mlp", "mlp_hidden": (5, 7)},
    "lista": {"architecture": "lista", "lista_steps": 2},
}


@pytest.mark.parametrize("setting", ["known_dictionary", "known_codes"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_encoder_fit_flops_match_torch_counter(name, setting):
    batch = problem()
    cfg = SAEConfig(d_in=6, d_sae=12, **CONFIGS[name])
    sae = make_sae(cfg)
    fit_cfg = EncoderFitConfig(setting, n_steps=2, batch_size=16)
    codes = batch.codes if setting == "known_codes" else None
    if setting == "known_codes" and name == "gated":
        with pytest.raises(ValueError, match="architecture must be one of"):
            fit_encoder(sae, batch.x, batch.dictionary, fit_cfg, codes)
        return
    with FlopCounterMode(display=False) as counter:
        fit_encoder(sae, batch.x, batch.dictionary, fit_cfg, codes)
    assert counter.get_total_flops() == cost.encoder_fit_flops(cfg, 2, 16, setting)


def test_encoder_fit_flops_hand_computed_and_validated():
    cfg = SAEConfig(d_in=6, d_sae=12)
    # encoder 2 * (2*6*12) (no input gradient) + decoder 2 * (2*12*6) per sample
    assert cost.encoder_fit_flops(cfg, 3, 4, "known_dictionary") == 3 * 4 * (288 + 288)
    assert cost.encoder_fit_flops(cfg, 3, 4, "known_codes") == 3 * 4 * 288
    with pytest.raises(ValueError, match="setting must be one of"):
        cost.encoder_fit_flops(cfg, 3, 4, "known")
