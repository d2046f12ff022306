"""The LISTA SAE (unrolled ISTA encoder): shapes, zero steps, gradients, FLOPs, fits, files."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from saelib import flops
from saelib.coding.amortisation import EncoderFitConfig, fit_encoder, set_dictionary_
from saelib.data import TensorBatches
from saelib.io import load_sae, save_sae
from saelib.saelens import save_saelens
from saelib.saes import LISTASAE, SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

D_IN, D_SAE = 5, 9


def lista(steps: int = 2, **kw) -> LISTASAE:
    return make_sae(SAEConfig(D_IN, D_SAE, "lista", lista_steps=steps, seed=3, **kw))


def test_shapes_and_parameters():
    sae = lista(3)
    x = torch.randn(7, D_IN)
    out = sae(x)
    assert out.f.shape == out.pre_acts.shape == (7, D_SAE) and out.x_hat.shape == (7, D_IN)
    assert sae.W_steps.shape == (3, D_IN, D_SAE) and sae.thresholds.shape == (3, D_SAE)
    assert torch.equal(out.f, out.pre_acts.relu()) and (out.f >= 0).all()


def test_zero_steps_is_the_relu_sae_encoder():
    relu = make_sae(SAEConfig(D_IN, D_SAE, "relu", seed=3))
    zero = lista(0)
    x = torch.randn(11, D_IN)
    assert torch.equal(zero.W_enc, relu.W_enc) and torch.equal(zero.W_dec, relu.W_dec)
    assert torch.equal(zero.encode(x), relu.encode(x))
    assert torch.equal(zero.loss(x, 0.2).total, relu.loss(x, 0.2).total)


def test_steps_start_at_ista_on_the_decoder():
    """Before training, a step is one ISTA step (step 1/L, threshold 0) on W_dec."""
    sae = lista(1)
    x = torch.randn(6, D_IN)
    with torch.no_grad():
        z0 = sae.linear_pre_acts(x).relu()
        W = sae.W_dec
        lipschitz = torch.linalg.matrix_norm(W, ord=2) ** 2
        step = (z0 - (z0 @ W + sae.b_dec - x) @ W.T / lipschitz).relu()
        assert torch.allclose(sae.encode(x), step, atol=1e-6)


def test_a_known_dictionary_restarts_the_steps_at_ista_on_it():
    """fit_encoder sets the true dictionary: the steps must start at ISTA on it, not on the
    random decoder the SAE was built with."""
    g = torch.Generator().manual_seed(1)
    D = torch.nn.functional.normalize(torch.randn(D_SAE, D_IN, generator=g), dim=-1)
    sae = lista(2)
    set_dictionary_(sae, D)
    expected = D.T / torch.linalg.matrix_norm(D, ord=2) ** 2
    for t in range(2):
        assert torch.allclose(sae.W_steps[t], expected, atol=1e-6)


def test_gradients_match_finite_differences():
    sae = lista(2).double()
    with torch.no_grad():  # away from ReLU kinks: distinct thresholds, biased start
        sae.thresholds.copy_(0.01 * torch.randn(2, D_SAE, dtype=torch.float64))
        sae.b_enc.fill_(0.3)
    x = torch.randn(4, D_IN, dtype=torch.float64)
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.W_steps, sae.thresholds]
    inputs = tuple(p.detach().clone().requires_grad_(True) for p in params)
    assert torch.autograd.gradcheck(lambda *p: _functional(sae, x, p), inputs)
    x_in = x.clone().requires_grad_(True)  # and the input's own gradient
    assert torch.autograd.gradcheck(lambda v: sae(v).f, (x_in,))


def _functional(sae, x, p):
    """Codes and reconstruction as functions of the parameter tensors (for gradcheck)."""
    names = ["W_enc", "b_enc", "W_dec", "b_dec", "W_steps", "thresholds"]
    out = torch.func.functional_call(sae, dict(zip(names, p, strict=True)), (x,))
    return out.f, out.x_hat


def test_flops_hand_count_and_torch_counter():
    cfg = SAEConfig(D_IN, D_SAE, "lista", lista_steps=3)
    assert flops.sae_encode_flops(cfg) == 2 * D_IN * D_SAE * (1 + 2 * 3)
    # training: 3x every product (both operands need gradients) but the first (input is data)
    per_sample = 3 * (2 * D_IN * D_SAE * 7 + 2 * D_SAE * D_IN) - 2 * D_IN * D_SAE
    assert flops.sae_train_step_flops(cfg, 4) == 4 * per_sample
    sae, x = make_sae(cfg), torch.randn(4, D_IN)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        sae.encode(x)
    assert counter.get_total_flops() == 4 * flops.sae_encode_flops(cfg)


def test_trains_with_the_trainer_and_fit_encoder():
    g = torch.Generator().manual_seed(0)
    D = torch.nn.functional.normalize(torch.randn(D_SAE, D_IN, generator=g), dim=-1)
    codes = torch.rand(256, D_SAE, generator=g) * (torch.rand(256, D_SAE, generator=g) < 0.2)
    x = codes @ D
    sae = lista(2)
    before = sae.loss(x, 0.1).total.item()
    Trainer(sae, TrainConfig(n_steps=60, lr=1e-2, sparsity_coeff=0.1, progress=False)).fit(
        TensorBatches(x, 64, seed=0)
    )
    assert sae.loss(x, 0.1).total.item() < before
    for setting, given in (("known_dictionary", None), ("known_codes", codes)):
        fitted = lista(2)
        fit = EncoderFitConfig(setting, n_steps=40, batch_size=64, lr=1e-2)
        losses = fit_encoder(fitted, x, D, fit, codes=given)
        assert losses[-10:].mean() < losses[:10].mean()
        assert torch.equal(fitted.W_dec, D)


def test_saves_in_saelib_format_and_refuses_saelens(tmp_path):
    sae = lista(2)
    with torch.no_grad():
        sae.thresholds.add_(0.1)
    back = load_sae(save_sae(sae, tmp_path / "own"))
    assert back.cfg == sae.cfg and isinstance(back, LISTASAE)
    x = torch.randn(5, D_IN)
    assert torch.equal(back.encode(x), sae.encode(x))
    with pytest.raises(ValueError, match="'lista' has no SAELens equivalent"):
        save_saelens(sae, tmp_path / "lens")


def test_steps_validated():
    with pytest.raises(ValueError, match="lista_steps"):
        SAEConfig(D_IN, D_SAE, "lista", lista_steps=-1)
