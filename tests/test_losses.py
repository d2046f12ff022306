"""Loss terms against hand computations, the papers' gradient formulas and brute force."""

import pytest
import torch

from saelib import losses


def test_mse_l1_and_weighted_l1_by_hand():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    x_hat = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert losses.mse(x, x_hat).item() == pytest.approx((1 + 4 + 1 + 1) / 2)
    f = torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 3.0]])
    assert losses.l1(f).item() == pytest.approx((3 + 3) / 2)
    W_dec = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])  # norms 5, 2, 1
    assert losses.decoder_weighted_l1(f, W_dec).item() == pytest.approx((5 + 4 + 3) / 2)


def test_tanh_penalty_saturates_and_matches_formula():
    f = torch.tensor([[0.5, 100.0]])
    W_dec = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    expected = torch.tanh(torch.tensor(4 * 0.5 * 2.0)) + torch.tanh(torch.tensor(400.0))
    assert losses.tanh_penalty(f, W_dec, scale=4.0).item() == pytest.approx(expected.item())
    assert losses.tanh_penalty(f, W_dec).item() < 2.0  # each latent pays at most 1


def test_rectangle_kernel():
    u = torch.tensor([-0.6, -0.5, -0.4, 0.0, 0.5, 0.51])
    assert losses.rectangle(u).tolist() == [0, 0, 1, 1, 1, 0]


def test_jumprelu_gradients_match_paper_formula():
    """Rajamanoharan et al. 2024, eqs. 11-12, against an explicit computation."""
    torch.manual_seed(0)
    eps = 0.1
    z = torch.randn(64, 5, dtype=torch.float64, requires_grad=True)
    theta = torch.full((5,), 0.3, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(64, 5, dtype=torch.float64)
    (losses.jumprelu(z, theta, eps) * upstream).sum().backward()

    zd = z.detach()
    H = (zd > 0.3).double()
    K = ((zd - 0.3).abs() <= eps / 2).double()
    assert K.sum() > 0, "test needs some z within the kernel's window"
    torch.testing.assert_close(z.grad, H * upstream)
    torch.testing.assert_close(theta.grad, (-(0.3 / eps) * K * upstream).sum(0))

    # the step: no gradient to z, -(1/eps) K to theta
    theta.grad = None
    z2 = zd.clone().requires_grad_(True)
    losses.l0_ste(z2, theta, eps).backward()
    assert z2.grad is None or torch.all(z2.grad == 0)
    torch.testing.assert_close(theta.grad, (-(1 / eps) * K).sum(0) / 64)


def test_jumprelu_forward_values():
    z = torch.tensor([[0.1, 0.5, -1.0]])
    theta = torch.tensor([0.2, 0.2, 0.2])
    assert losses.jumprelu(z, theta, 0.01).tolist() == [[0.0, 0.5, 0.0]]
    assert losses.l0_ste(z, theta, 0.01).item() == 1.0


def _dead_latent_problem():
    torch.manual_seed(1)
    d_in, d_sae, batch = 6, 10, 32
    pre = torch.randn(batch, d_sae, requires_grad=True)
    W_dec = torch.randn(d_sae, d_in, requires_grad=True)
    residual = torch.randn(batch, d_in)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[[2, 5, 7]] = True
    return pre, W_dec, residual, dead


def test_aux_k_touches_only_dead_latents():
    pre, W_dec, residual, dead = _dead_latent_problem()
    loss = losses.aux_k(residual, pre, dead, W_dec, k_aux=2)
    loss.backward()
    assert loss.item() > 0
    assert torch.all(pre.grad[:, ~dead] == 0)
    assert torch.all(W_dec.grad[~dead] == 0)
    assert pre.grad[:, dead].abs().sum() > 0 and W_dec.grad[dead].abs().sum() > 0


def test_aux_k_value_by_hand_and_no_dead():
    pre, W_dec, residual, dead = _dead_latent_problem()
    with torch.no_grad():
        loss = losses.aux_k(residual, pre, dead, W_dec, k_aux=2)
        # explicit: per row, the two largest dead pre-activations, relu'd
        dead_idx = dead.nonzero().squeeze(1)
        recon = torch.zeros_like(residual)
        for b in range(pre.shape[0]):
            vals, pos = pre[b, dead_idx].topk(2)
            for v, p in zip(vals, pos, strict=True):
                recon[b] += v.clamp_min(0) * W_dec[dead_idx[p]]
        expected = (recon - residual).pow(2).sum(-1).mean()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        none = losses.aux_k(residual, pre, torch.zeros_like(dead), W_dec, k_aux=2)
        assert none.item() == 0.0


def test_aux_k_scales_like_mse():
    """Scaling the activations by s scales mse and aux-k alike (by s^2): a fixed
    coefficient keeps its meaning on data of any scale."""
    pre, W_dec, residual, dead = _dead_latent_problem()
    x_hat = torch.randn_like(residual)
    with torch.no_grad():
        ratios = []
        for s in (1.0, 10.0):
            x = s * (residual + x_hat)
            aux = losses.aux_k(s * residual, s * pre, dead, W_dec, k_aux=2)
            ratios.append(aux / losses.mse(x, s * x_hat))
    assert ratios[0].item() == pytest.approx(ratios[1].item(), rel=1e-4)


def _orthogonality_brute_force(W_dec, power):
    atoms = W_dec / W_dec.norm(dim=-1, keepdim=True)
    cos = (atoms @ atoms.T).abs() - 2 * torch.eye(W_dec.shape[0], dtype=W_dec.dtype)
    return cos.max(dim=1).values.pow(power).mean()


@pytest.mark.parametrize("power", [1.0, 2.0])
@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_orthogonality_penalty_matches_brute_force(power, chunk_size):
    torch.manual_seed(2)
    W = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    ours = losses.orthogonality_penalty(W, power=power, chunk_size=chunk_size)
    (g_ours,) = torch.autograd.grad(ours, W)
    W2 = W.detach().clone().requires_grad_(True)
    ref = _orthogonality_brute_force(W2, power)
    (g_ref,) = torch.autograd.grad(ref, W2)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)


def test_orthogonality_penalty_extremes():
    orthonormal = torch.eye(4)
    assert losses.orthogonality_penalty(orthonormal).item() == pytest.approx(0.0)
    duplicated = torch.tensor([[1.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    assert losses.orthogonality_penalty(duplicated).item() == pytest.approx(1.0)
    # superlinear: small overlaps shrink more than large ones
    W = torch.tensor([[1.0, 0.0], [0.8, 0.6]])  # cos 0.8
    assert losses.orthogonality_penalty(W, power=3.0).item() == pytest.approx(0.8**3)
    with pytest.raises(ValueError, match="power"):
        losses.orthogonality_penalty(W, power=0)


def test_orthogonality_penalty_memory_is_chunked(monkeypatch):
    """No block larger than [chunk_size, d_sae] is formed, and gradients stay O(d_sae)."""
    torch.manual_seed(3)
    W = torch.randn(3000, 16, requires_grad=True)
    blocks, saved = [], []
    real_block = losses._abs_cos_block

    def spy(atoms, start, stop):
        out = real_block(atoms, start, stop)
        blocks.append(tuple(out.shape))
        return out

    monkeypatch.setattr(losses, "_abs_cos_block", spy)
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        loss = losses.orthogonality_penalty(W, chunk_size=256)
    loss.backward()
    assert len(blocks) == 12 and max(rows for rows, _ in blocks) == 256
    assert max(saved) <= 3000 * 16  # autograd keeps only [d_sae, d_in]-sized tensors


@pytest.mark.parametrize("name", ["l1", "l1_dec_norm"])
def test_nonnegative_penalty_shortcut_equals_the_loss(name):
    """ReLU codes take the |f| = f shortcut: same value, same gradient through the ReLU."""
    from saelib.saes.base import penalty

    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=g, dtype=torch.float64).requires_grad_()
    W_dec = torch.randn(5, 3, generator=g, dtype=torch.float64).requires_grad_()
    fast = penalty(name, z.relu(), W_dec, 4.0, nonnegative=True)
    slow = losses.l1(z.relu()) if name == "l1" else losses.decoder_weighted_l1(z.relu(), W_dec)
    torch.testing.assert_close(fast, slow)
    both = {"allow_unused": True, "materialize_grads": True}
    fast_grads = torch.autograd.grad(fast, (z, W_dec), **both)
    for a, b in zip(fast_grads, torch.autograd.grad(slow, (z, W_dec), **both), strict=True):
        torch.testing.assert_close(a, b)
