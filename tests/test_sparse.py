"""Sparse TopK/BatchTopK path against its eager dense twin: values and gradients."""

import pytest
import torch
from conftest import assert_matches_finite_differences

from saelib import losses
from saelib.saes import SAEConfig, make_sae, sparse
from saelib.training import TrainConfig, Trainer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
D_IN, D_SAE, K, BATCH = 12, 40, 4, 24


def perturbed_sae(arch, dtype=torch.float64, device="cpu", seed=0, **kw):
    sae = make_sae(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K, seed=seed, **kw))
    sae = sae.to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-zero biases and non-unit atoms, so nothing hides a bug
        for p in sae.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=dtype).to(device))
    return sae


def grads(sae, loss, extra=()):
    params = [p for p in sae.parameters()] + list(extra)
    return torch.autograd.grad(loss, params)


def tol(dtype):
    return {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("kw", [{}, {"tied": True}, {"apply_b_dec_to_input": False}])
def test_sparse_path_equals_dense_twin(arch, dtype, device, kw):
    sae = perturbed_sae(arch, dtype, device, **kw)
    x = torch.randn(BATCH, D_IN, dtype=dtype, device=device, requires_grad=True)
    w = torch.randn(BATCH, D_IN, dtype=dtype, device=device)  # a loss that weighs outputs
    dense, sp = sae(x), sae.sparse_forward(x)
    assert sp.f is None and sp.codes.vals.shape == (BATCH * K,)
    torch.testing.assert_close(sp.x_hat, dense.x_hat, **tol(dtype))
    torch.testing.assert_close(sp.codes.to_dense(), dense.f, **tol(dtype))
    torch.testing.assert_close(sp.pre_acts, dense.pre_acts, **tol(dtype))
    assert torch.equal(sp.codes.fired(), (dense.f > 0).any(0))
    assert sp.codes.l0().item() == (dense.f > 0).sum(-1).double().mean().item()
    # The loss mixes x_hat and the codes, so both gradient routes are checked.
    loss_d = (dense.x_hat * w).sum() + dense.f.pow(2).sum()
    loss_s = (sp.x_hat * w).sum() + sp.codes.vals.pow(2).sum()
    for a, b in zip(grads(sae, loss_s, [x]), grads(sae, loss_d, [x]), strict=True):
        torch.testing.assert_close(a, b, **tol(dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("aux_path", ["sparse entries", "dense dead columns"])
def test_sparse_loss_and_aux_k_equal_dense(arch, device, aux_path, monkeypatch):
    density = 0 if aux_path == "sparse entries" else 10**9
    monkeypatch.setattr("saelib.saes.topk.DENSE_AUX_DENSITY", density)
    sae = perturbed_sae(arch, torch.float64, device)
    x = torch.randn(BATCH, D_IN, dtype=torch.float64, device=device)
    for n_dead, k_aux in [(0, 5), (3, 5), (17, 5), (D_SAE, 7)]:
        dead = torch.zeros(D_SAE, dtype=torch.bool, device=device)
        dead[torch.randperm(D_SAE)[:n_dead].to(device)] = True
        results = []
        for path in ("dense", "sparse"):
            total, terms, out = sae.loss(x) if path == "dense" else sae.sparse_loss(x)
            residual = (x - out.x_hat).detach()
            if path == "dense":
                aux = losses.aux_k(residual, out.pre_acts, dead, sae.W_dec, k_aux)
            else:
                aux = sae.sparse_aux_k(x, residual, out.pre_acts, dead, k_aux)
            loss = total + 0.5 * aux
            results.append((terms["mse"], aux, grads(sae, loss)))
        (mse_d, aux_d, g_d), (mse_s, aux_s, g_s) = results
        torch.testing.assert_close(mse_s, mse_d, **tol(torch.float64))
        torch.testing.assert_close(aux_s, aux_d, **tol(torch.float64))
        if n_dead:
            assert aux_s > 0
        for a, b in zip(g_s, g_d, strict=True):
            torch.testing.assert_close(a, b, **tol(torch.float64))


def test_dense_pre_acts_keep_their_gradient_on_the_sparse_path():
    """A loss on pre_acts (here a dense aux-k) adds its dense gradient to the sparse one."""
    sae = perturbed_sae("topk")
    x = torch.randn(BATCH, D_IN, dtype=torch.float64)
    dead = torch.arange(D_SAE) % 3 == 0
    out_d, out_s = sae(x), sae.sparse_forward(x)
    loss_d = losses.mse(x, out_d.x_hat) + losses.aux_k(x, out_d.pre_acts, dead, sae.W_dec, 5)
    loss_s = losses.mse(x, out_s.x_hat) + losses.aux_k(x, out_s.pre_acts, dead, sae.W_dec, 5)
    for a, b in zip(grads(sae, loss_s), grads(sae, loss_d), strict=True):
        torch.testing.assert_close(a, b, **tol(torch.float64))


def test_encoder_gradient_against_finite_differences():
    """The sparse path's gradients against central differences (an independent check)."""
    sae = perturbed_sae("topk")
    x = torch.randn(6, D_IN, dtype=torch.float64)

    def loss():
        return losses.mse(x, sae.sparse_forward(x).x_hat)

    assert_matches_finite_differences(list(sae.parameters()), loss, grads(sae, loss()))


def test_sparse_codes_pointers():
    rows = torch.tensor([0, 0, 2, 2, 2])
    cols = torch.tensor([1, 3, 0, 1, 4])
    codes = sparse.make_codes(rows, cols, torch.ones(5), (3, 5))
    assert codes.crow.tolist() == [0, 2, 2, 5]
    assert codes.ccol.tolist() == [0, 1, 3, 3, 4, 5]
    assert cols[codes.order].tolist() == [0, 1, 1, 3, 4]
    assert rows[codes.order].tolist() == [2, 0, 2, 0, 2]


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_training_sparse_equals_dense(arch):
    """Whole runs (aux-k, unit-norm decoder, dead tracking) agree on both paths."""
    x = torch.randn(512, D_IN)
    cfg = SAEConfig(d_in=D_IN, d_sae=256, architecture=arch, k=K, seed=1)  # some die
    trained = {}
    for flag in (True, False):
        trainer = Trainer(
            make_sae(cfg).double(),
            TrainConfig(
                n_steps=12, lr=1e-2, aux_k=6, dead_after_tokens=64, sparse_topk=flag,
                progress=False, log_every=4,
            ),
        )  # fmt: skip
        trainer.fit(x.double().split(64) * 2)
        trained[flag] = trainer
    a, b = trained[True], trained[False]
    for (name, p), q in zip(a.sae.state_dict().items(), b.sae.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-8, atol=1e-8, msg=name)
    assert torch.equal(a.tokens_since_fired, b.tokens_since_fired)
    assert any(r["aux_k"] > 0 for r in a.history)
    for ra, rb in zip(a.history, b.history, strict=True):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert ra[key] == pytest.approx(rb[key], rel=1e-8, abs=1e-10), key
