"""SAE architectures: contract, exact sparsity, papers' gradients, configs."""

import pytest
import torch

from saelib import losses
from saelib.saes import SAE_CLASSES, SAEConfig, make_sae

D_IN, D_SAE = 8, 24


def config(arch, **kw):
    if arch in ("topk", "batchtopk", "matryoshka"):
        kw.setdefault("k", 3)
    if arch == "matryoshka":
        kw.setdefault("matryoshka_widths", (4, 12, D_SAE))
    return SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, **kw)


def perturbed(sae, seed=0):
    """Randomise every parameter so zero-initialised biases cannot hide a bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return sae


@pytest.mark.parametrize("arch", list(SAE_CLASSES))
def test_contract_shapes_and_consistency(arch):
    sae = perturbed(make_sae(config(arch)))
    x = torch.randn(16, D_IN)
    out = sae(x)
    assert out.x_hat.shape == (16, D_IN)
    assert out.f.shape == out.pre_acts.shape == (16, D_SAE)
    assert torch.all(out.f >= 0)
    torch.testing.assert_close(sae.encode(x), out.f)
    torch.testing.assert_close(sae.decode(out.f), out.x_hat)
    torch.testing.assert_close(out.x_hat, out.f @ sae.W_dec + sae.b_dec)
    total, terms, _ = sae.loss(x, sparsity_coeff=0.5)
    assert {"mse", "sparsity"} <= set(terms)
    extra = sum(v for name, v in terms.items() if name not in ("mse", "sparsity"))  # aux, ...
    torch.testing.assert_close(total, terms["mse"] + 0.5 * terms["sparsity"] + extra)
    total.backward()
    assert all(p.grad is not None for p in sae.parameters())


@pytest.mark.parametrize("arch", list(SAE_CLASSES))
def test_same_seed_same_weights(arch):
    a, b = make_sae(config(arch, seed=3)), make_sae(config(arch, seed=3))
    c = make_sae(config(arch, seed=4))
    for (name, p), q, _r in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(a.W_dec, c.W_dec)


def test_decoder_starts_unit_norm():
    sae = make_sae(config("relu"))
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(D_SAE))


def test_topk_has_exactly_k_active():
    sae = make_sae(config("topk", k=5))
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # all pre-activations positive: exactly k survive
    f = sae.encode(torch.randn(32, D_IN))
    assert torch.all((f > 0).sum(-1) == 5)
    with torch.no_grad():
        sae.b_enc.fill_(-10.0)  # negative pre-activations never fire, even in the top k
    assert torch.all(sae.encode(torch.randn(32, D_IN)) == 0)


def test_topk_keeps_the_largest():
    from saelib.saes.topk import topk_activation

    pre = torch.tensor([[0.5, -1.0, 2.0, 1.0], [-3.0, -2.0, -1.0, 0.1]])
    expected = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.1]])
    torch.testing.assert_close(topk_activation(pre, 2), expected)


def test_batchtopk_training_and_inference():
    sae = make_sae(config("batchtopk", k=3, threshold_momentum=0.5))
    with torch.no_grad():
        sae.b_enc.fill_(5.0)
    x = torch.randn(64, D_IN)
    sae.train()
    out = sae(x)
    assert (out.f > 0).sum().item() == 3 * 64  # k per sample on average, not per row
    assert (out.f > 0).sum(-1).unique().numel() > 1  # rows differ
    assert sae.threshold.item() < 0  # not estimated before any update
    sae.update_statistics(out)
    first = out.f[out.f > 0].min().item()
    assert sae.threshold.item() == pytest.approx(first)
    out2 = sae(torch.randn(64, D_IN))
    sae.update_statistics(out2)
    second = out2.f[out2.f > 0].min().item()
    assert sae.threshold.item() == pytest.approx(0.5 * first + 0.5 * second)
    sae.eval()
    pre = sae(x).pre_acts
    torch.testing.assert_close(sae.encode(x), pre * (pre > sae.threshold))


def test_tied_encoder_is_decoder_transpose():
    sae = make_sae(config("relu", tied=True))
    assert "W_enc" not in dict(sae.named_parameters())
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    sae.loss(torch.randn(4, D_IN), 0.1).total.backward()
    assert sae.W_dec.grad is not None
    untied = make_sae(config("relu"))
    assert "W_enc" in dict(untied.named_parameters())


def test_mlp_depth_and_topk_output():
    sae = make_sae(
        SAEConfig(
            d_in=D_IN, d_sae=D_SAE, architecture="mlp", mlp_hidden=(16, 12), mlp_output="topk", k=4
        )
    )
    linears = [m for m in sae.encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 16), (16, 12), (12, 24)]
    with torch.no_grad():
        linears[-1].bias.fill_(10.0)
    assert torch.all((sae.encode(torch.randn(9, D_IN)) > 0).sum(-1) == 4)


def test_jumprelu_threshold_gradient_from_l0_term():
    """d(lambda * L0)/d log(theta) = lambda * theta * (-(1/eps) mean_b K((z - theta)/eps))."""
    torch.manual_seed(0)
    eps = 0.5  # wide, so that many pre-activations fall inside the kernel
    sae = perturbed(make_sae(config("jumprelu", bandwidth=eps, init_threshold=0.2)))
    x = torch.randn(128, D_IN)
    out = sae(x)
    (g,) = torch.autograd.grad(0.3 * sae.sparsity(out), sae.log_threshold)
    z, theta = out.pre_acts.detach(), sae.threshold.detach()
    K = ((z - theta).abs() <= eps / 2).float()
    assert K.sum() > 0
    torch.testing.assert_close(g, 0.3 * theta * (-(1 / eps) * K.mean(0)))


def test_gated_gradients_match_paper():
    """Gated SAE (Rajamanoharan et al. 2024, eq. 8 and fig. 2): the gate learns only from
    the sparsity and auxiliary terms, the frozen decoder gets nothing from the auxiliary
    term, and r_mag learns only from reconstruction. Checked against explicit formulas."""
    torch.manual_seed(0)
    lam = 0.7
    sae = perturbed(make_sae(config("gated")), seed=1)
    x = torch.randn(32, D_IN)
    total, terms, out = sae.loss(x, lam)
    B = x.shape[0]

    # frozen decoder: the auxiliary term sends no gradient to W_dec
    (g_aux_wdec,) = torch.autograd.grad(
        terms["aux"], sae.W_dec, retain_graph=True, allow_unused=True
    )
    assert g_aux_wdec is None or torch.all(g_aux_wdec == 0)

    params = [sae.b_enc, sae.r_mag, sae.W_dec]
    g_b_gate, g_r_mag, g_wdec = torch.autograd.grad(total, params)
    with torch.no_grad():
        x_c = x - sae.b_dec
        pi_gate = x_c @ sae.W_enc + sae.b_enc
        pi_mag = x_c @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag
        gate = pi_gate.relu()
        e_aux = x - gate @ sae.W_dec - sae.b_dec
        dpi = (-2 / B * e_aux @ sae.W_dec.T + lam / B) * (pi_gate > 0)
        torch.testing.assert_close(g_b_gate, dpi.sum(0))

        f = (pi_gate > 0) * pi_mag.relu()
        e = x - f @ sae.W_dec - sae.b_dec
        df = -2 / B * e @ sae.W_dec.T
        dr = df * (pi_gate > 0) * (pi_mag > 0) * (x_c @ sae.W_enc) * sae.r_mag.exp()
        torch.testing.assert_close(g_r_mag, dr.sum(0))
        torch.testing.assert_close(g_wdec, -2 / B * f.T @ e)  # reconstruction only


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(d_in=0), "d_in must be an integer >= 1"),
        (dict(d_sae=2.5), "d_sae must be an integer >= 1"),
        (dict(architecture="sparse"), r"architecture must be one of \['relu', 'topk'"),
        (dict(architecture="topk"), "k must be an integer >= 1"),
        (dict(architecture="topk", k=99), r"k must be in \[1, d_sae=24\]"),
        (dict(k=3), "k is only used by topk"),
        (dict(sparsity_penalty="l2"), r"sparsity_penalty must be one of \['l1'"),
        (dict(bandwidth=-1.0), "bandwidth must be a number > 0"),
        (dict(threshold_momentum=1.0), r"threshold_momentum must be in \[0, 1\)"),
        (dict(architecture="mlp", mlp_hidden=[16]), "mlp_hidden must be a non-empty tuple"),
        (dict(architecture="mlp", mlp_hidden=(16, 0)), "mlp_hidden entries must be"),
        (dict(architecture="mlp", tied=True), "tied is only allowed for architectures"),
        (dict(mlp_output="softmax"), r"mlp_output must be one of \['relu', 'topk'\]"),
    ],
)
def test_config_errors_name_the_parameter(kw, match):
    args = dict(d_in=D_IN, d_sae=D_SAE) | kw
    with pytest.raises(ValueError, match=match):
        SAEConfig(**args)


def test_config_dict_round_trip():
    cfg = SAEConfig(d_in=4, d_sae=8, architecture="mlp", mlp_hidden=(5, 6), metadata={"a": 1})
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg


def test_penalty_options_reach_the_loss():
    x = torch.randn(8, D_IN)
    vals = {}
    for pen in ("l1", "l1_dec_norm", "tanh"):
        sae = make_sae(config("relu", sparsity_penalty=pen))
        with torch.no_grad():
            sae.W_dec.mul_(2.0)  # norms 2: l1_dec_norm must be twice l1
        vals[pen] = sae.sparsity(sae(x)).item()
    f = make_sae(config("relu")).encode(x)  # same seed, same encoder
    assert vals["l1"] == pytest.approx(losses.l1(f).item(), rel=1e-5)
    assert vals["l1_dec_norm"] == pytest.approx(2 * vals["l1"], rel=1e-5)
    assert vals["tanh"] < D_SAE


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu", "gated", "mlp", "lista"])
def test_training_loss_equals_loss(arch):
    """The trainer's loss is the SAE's own: on the sparse path (TopK, BatchTopK) the same
    total and gradients as the dense ``loss``; elsewhere ``loss`` itself."""
    kw = {"k": 3} if arch in ("topk", "batchtopk") else {}
    kw |= {"mlp_hidden": (8,)} if arch == "mlp" else {}
    sae = make_sae(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, **kw)).double()
    x = torch.randn(16, D_IN, dtype=torch.float64)
    dense = sae.loss(x, 0.1)
    grads = torch.autograd.grad(dense.total, sae.W_dec)
    fast = sae.training_loss(x, 0.1, sparse=True)
    assert torch.allclose(fast.total, dense.total)
    assert torch.allclose(torch.autograd.grad(fast.total, sae.W_dec)[0], grads[0])
    assert torch.equal(fast.output.fired(), dense.output.fired())
    assert torch.allclose(fast.output.l0(), dense.output.l0())
    sparse_path = arch in ("topk", "batchtopk")
    assert (fast.output.f is None) == sparse_path


def test_needs_unit_decoder_for_plain_l1_only():
    plain = [("relu", "l1"), ("mlp", "l1"), ("lista", "l1"), ("gated", "l1_dec_norm")]
    for arch, penalty in plain + [("relu", "l1_dec_norm"), ("topk", "l1")]:
        kw = {"k": 2} if arch == "topk" else {}
        kw |= {"mlp_hidden": (8,)} if arch == "mlp" else {}
        cfg = SAEConfig(d_in=4, d_sae=8, architecture=arch, sparsity_penalty=penalty, **kw)
        assert make_sae(cfg).needs_unit_decoder == ((arch, penalty) in plain), (arch, penalty)
