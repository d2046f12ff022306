"""Matryoshka BatchTopK: the nested losses by hand, one level equals BatchTopK, the sparse
path equals the dense twin (values and gradients), gradients against finite differences,
whole training runs on both paths, and the config's refusals.

Not here: test_recovery's planted-dictionary check. On its data (48 independent features of
uniform frequency) Matryoshka reaches MMCS 0.80-0.82 (prefixes (12, 48) and (24, 48), with
or without aux-k; BatchTopK 0.9+): a prefix must reconstruct alone, and with no frequent or
parent features to hold it learns mixtures (a fifth of its latents fire densely). Its
recovery belongs on hierarchical data (SynthSAEBench-style), still to be written.
"""

import pytest
import torch
from conftest import assert_matches_finite_differences

from saelib import losses
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

D_IN, D_SAE, K, BATCH = 10, 32, 4, 24
WIDTHS = (4, 12, D_SAE)


def perturbed(arch="matryoshka", widths=WIDTHS, dtype=torch.float64, seed=0, **kw):
    extra = {"matryoshka_widths": widths} if arch == "matryoshka" else {}
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K, seed=seed, **extra, **kw)
    sae = make_sae(cfg).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-zero biases and non-unit atoms, so nothing hides a bug
        for p in sae.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=dtype))
    return sae.train()


def grads(sae, loss, extra=()):
    return torch.autograd.grad(loss, [*sae.parameters(), *extra])


def test_inner_losses_by_hand():
    sae = perturbed()
    x = torch.randn(BATCH, D_IN, dtype=torch.float64)
    total, terms, out = sae.loss(x)
    f, W, b = out.f, sae.W_dec, sae.b_dec
    # each inner prefix reconstructs from its first m latents alone, via a mask
    inner = 0.0
    for m in WIDTHS[:-1]:
        mask = (torch.arange(D_SAE) < m).double()
        inner += ((x - ((f * mask) @ W + b)) ** 2).sum(-1).mean()
    torch.testing.assert_close(terms["inner_mse"], inner)
    torch.testing.assert_close(terms["mse"], ((x - (f @ W + b)) ** 2).sum(-1).mean())
    torch.testing.assert_close(total, terms["mse"] + inner)
    assert (f > 0).sum() == K * BATCH  # BatchTopK's codes over all latents


def test_one_level_is_batchtopk():
    mat, btk = perturbed(widths=(D_SAE,)), perturbed("batchtopk")
    for p, q in zip(mat.parameters(), btk.parameters(), strict=True):
        assert torch.equal(p, q)
    x = torch.randn(BATCH, D_IN, dtype=torch.float64)
    (t_m, terms_m, _), (t_b, _, _) = mat.loss(x), btk.loss(x)
    assert terms_m["inner_mse"] == 0 and torch.equal(t_m, t_b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kw", [{}, {"tied": True}, {"apply_b_dec_to_input": False}])
def test_sparse_loss_equals_dense_twin(dtype, kw):
    sae = perturbed(dtype=dtype, **kw)
    x = torch.randn(BATCH, D_IN, dtype=dtype, requires_grad=True)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}
    dense, sp = sae.loss(x), sae.sparse_loss(x)
    assert sp.output.f is None and dense.output.f is not None
    for name in ("mse", "inner_mse"):
        torch.testing.assert_close(sp.terms[name], dense.terms[name], **tol)
    for a, b in zip(grads(sae, sp.total, [x]), grads(sae, dense.total, [x]), strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_inner_gradient_against_finite_differences():
    sae = perturbed()
    x = torch.randn(6, D_IN, dtype=torch.float64)

    def inner():
        return sae.inner_mse(x, sae.sparse_forward(x))

    assert_matches_finite_differences(list(sae.parameters()), inner, grads(sae, inner()))


def test_training_sparse_equals_dense():
    """Whole runs (aux-k, unit-norm decoder, the inference threshold) agree on both paths."""
    x = torch.randn(512, D_IN, dtype=torch.float64)
    cfg = SAEConfig(d_in=D_IN, d_sae=128, architecture="matryoshka", k=K, seed=1,
                    matryoshka_widths=(8, 32, 128))  # fmt: skip
    trained = {}
    for flag in (True, False):
        trainer = Trainer(
            make_sae(cfg).double(),
            TrainConfig(n_steps=12, lr=1e-2, aux_k=6, dead_after_tokens=64, sparse_topk=flag,
                        progress=False, log_every=4),
        )  # fmt: skip
        trainer.fit(x.split(64) * 2)
        trained[flag] = trainer
    a, b = trained[True], trained[False]
    for (name, p), q in zip(a.sae.state_dict().items(), b.sae.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-8, atol=1e-8, msg=name)
    assert a.sae.threshold > 0
    for ra, rb in zip(a.history, b.history, strict=True):
        assert ra.keys() == rb.keys() and "inner_mse" in ra
        for key in ra:
            assert ra[key] == pytest.approx(rb[key], rel=1e-8, abs=1e-10), key


def test_prefixes_learn_to_reconstruct_alone():
    """Training lowers the first prefix's own error far more than BatchTopK's first latents:
    the nested loss is what makes a prefix a dictionary of its own."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, D_IN, generator=g) * torch.linspace(3, 0.3, D_IN)
    errors = {}
    for arch in ("matryoshka", "batchtopk"):
        extra = {"matryoshka_widths": WIDTHS} if arch == "matryoshka" else {}
        sae = make_sae(SAEConfig(D_IN, D_SAE, arch, k=K, seed=0, **extra))
        Trainer(sae, TrainConfig(n_steps=150, lr=3e-3, progress=False)).fit(x.split(128) * 10)
        with torch.no_grad():
            f = sae.train()(x).f  # training-mode codes (BatchTopK over the batch)
            prefix = f[:, : WIDTHS[0]] @ sae.W_dec[: WIDTHS[0]] + sae.b_dec
            errors[arch] = float(losses.mse(x, prefix) / losses.mse(x, x.mean(0)))
    assert errors["matryoshka"] < 0.8 * errors["batchtopk"], errors


@pytest.mark.parametrize(
    "widths, match",
    [
        ((), "non-empty tuple"),
        ([8, D_SAE], "non-empty tuple"),
        ((8, 4, D_SAE), "increase strictly"),
        ((8, 16), "end at d_sae=32"),
        ((0, D_SAE), "entries"),
        ((8, 64), "entries"),
    ],
)
def test_config_refuses_bad_widths(widths, match):
    with pytest.raises(ValueError, match=match):
        SAEConfig(D_IN, D_SAE, "matryoshka", k=K, matryoshka_widths=widths)


def test_widths_only_for_matryoshka_and_round_trip():
    with pytest.raises(ValueError, match="only used by architecture='matryoshka'"):
        SAEConfig(D_IN, D_SAE, "batchtopk", k=K, matryoshka_widths=(8, D_SAE))
    with pytest.raises(ValueError, match="k must be"):
        SAEConfig(D_IN, D_SAE, "matryoshka", matryoshka_widths=(8, D_SAE))
    cfg = SAEConfig(D_IN, D_SAE, "matryoshka", k=K, matryoshka_widths=(8, D_SAE))
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg
