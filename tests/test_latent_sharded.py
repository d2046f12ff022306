"""Latent-sharded TopK (2 gloo processes) against the unsharded TopK SAE: codes, loss and
gradients, ties at the k-th value, finite differences, and the world-size pitfall."""

import warnings

import numpy as np
import pytest
import torch
import torch.distributed.nn.functional as dist_fn

from saelib import losses
from saelib.distributed import run_local
from saelib.latent_sharded import LatentShardedTopK, shard_bounds
from saelib.saes import SAEConfig, make_sae

K, D_IN, D_SAE = 3, 6, 11  # 11 latents: blocks of 6 and 5
NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


def _sae():
    sae = make_sae(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="topk", k=K, seed=2)).double()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(D_SAE, generator=g, dtype=torch.float64) * 0.3)
        sae.b_dec.copy_(torch.randn(D_IN, generator=g, dtype=torch.float64) * 0.3)
    return sae


def _x():
    return torch.randn(16, D_IN, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def _tied_case():
    """An SAE and batch with exact ties at the k-th value: rows of zeros read b_enc."""
    sae = _sae()
    with torch.no_grad():
        sae.b_dec.zero_()
        # five latents tie at 2 for the top 3: ids 1 and 4 (rank 0), 6 (rank 1) win
        sae.b_enc.copy_(torch.tensor([1, 2, 0, 0, 2, 1, 2, 2, 1, 0, 2], dtype=torch.float64))
    x = _x()
    x[::2] = 0.0
    return sae, x


def _grads(module):
    return {n: getattr(module, n).grad.clone() for n in NAMES}


def _case(rank):
    sae, x = _sae(), _x()
    sharded = LatentShardedTopK.from_sae(sae)
    result = {"lo": sharded.lo, "hi": sharded.lo + sharded.W_dec.shape[0]}
    out = sharded.loss(x)
    out.total.backward()
    result.update(loss=out.total.detach(), codes=sharded.gather_codes(out.output.f))
    result["grads"] = _grads(sharded)

    # the pitfall: PyTorch's differentiable all-reduce also all-reduces the gradient
    naive = LatentShardedTopK.from_sae(sae)
    f, _ = naive.encode(x)
    with warnings.catch_warnings():  # deprecated, but still PyTorch's differentiable form
        warnings.simplefilter("ignore", FutureWarning)
        x_hat = dist_fn.all_reduce(f @ naive.W_dec) + naive.b_dec
    losses.mse(x, x_hat).backward()
    result["naive_grads"] = _grads(naive)

    # central finite differences of the loss in a few entries of each parameter; the
    # owner perturbs its own block, and every rank perturbs the replicated b_dec
    eps, fd = 1e-6, []
    entries = [("W_enc", (2, 1)), ("b_enc", (0,)), ("W_dec", (1, 4)), ("b_dec", (3,))]
    for owner in range(2):
        for name, idx in entries:
            if name == "b_dec" and owner == 1:
                continue
            moves = rank == owner or name == "b_dec"
            values = []
            for sign in (1, -1):
                with torch.no_grad():
                    if moves:
                        getattr(sharded, name)[idx] += sign * eps
                    values.append(float(sharded.loss(x).total))
                    if moves:
                        getattr(sharded, name)[idx] -= sign * eps
            if rank == owner:
                fd.append((name, idx, (values[0] - values[1]) / (2 * eps)))
    result["fd"] = fd

    tied, x_tied = _tied_case()
    tied_sharded = LatentShardedTopK.from_sae(tied)
    result["tied_codes"] = tied_sharded.gather_codes(tied_sharded(x_tied).f)
    return result


@pytest.mark.distributed
def test_sharded_topk_equals_unsharded(one_thread):
    ranks = run_local(_case, 2, timeout_s=180)
    sae, x = _sae(), _x()
    out = sae.loss(x)
    out.total.backward()
    codes = sae.encode(x).detach().numpy()
    assert (codes > 0).sum(1).min() == K  # every row has k active latents
    for r in ranks:
        np.testing.assert_array_equal(r["codes"], codes)  # forward codes exact
        assert r["loss"] == pytest.approx(float(out.total.detach()), rel=1e-14)
        lo, hi = r["lo"], r["hi"]
        full = {
            "W_enc": sae.W_enc.grad[:, lo:hi],
            "b_enc": sae.b_enc.grad[lo:hi],
            "W_dec": sae.W_dec.grad[lo:hi],
            "b_dec": sae.b_dec.grad,
        }
        for name in NAMES:
            expected = full[name].numpy()
            assert np.abs(expected).max() > 1e-3, name  # a gradient that can differ
            np.testing.assert_allclose(r["grads"][name], expected, rtol=1e-10, atol=1e-13)
        # the naive all-reduce doubles every gradient through it (world size 2): the
        # pitfall, caught (b_dec's direct term bypasses the all-reduce, so not 2x there)
        for name in ("W_enc", "b_enc", "W_dec"):
            np.testing.assert_allclose(r["naive_grads"][name], 2 * full[name].numpy(), 1e-10)
        for name, idx, value in r["fd"]:
            assert r["grads"][name][idx] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert [(r["lo"], r["hi"]) for r in ranks] == [(0, 6), (6, 11)]

    # ties: k active per row, the top values, ties to the lowest latent ids
    tied, x_tied = _tied_case()
    pre = tied.pre_activations(x_tied).detach()
    order = pre.sort(dim=-1, descending=True, stable=True).indices[:, :K]
    expected = torch.zeros_like(pre).scatter(1, order, pre.gather(1, order).relu())
    assert (pre[0].sort(descending=True).values[K - 1 : K + 1].diff() == 0).all()  # a tie
    assert sorted(order[0].tolist()) == [1, 4, 6]
    for r in ranks:
        np.testing.assert_array_equal(r["tied_codes"], expected.numpy())
    # one process's topk keeps the same values (its choice among ties is its own)
    np.testing.assert_array_equal(
        np.sort(tied.encode(x_tied).detach().numpy(), 1), np.sort(expected.numpy(), 1)
    )


@pytest.mark.parametrize(
    "d_sae, n, expected",
    [
        (11, 2, [(0, 6), (6, 11)]),
        (8, 4, [(0, 2), (2, 4), (4, 6), (6, 8)]),
        (5, 3, [(0, 2), (2, 4), (4, 5)]),
    ],
)
def test_shard_bounds_cover_the_latents(d_sae, n, expected):
    assert [shard_bounds(d_sae, n, r) for r in range(n)] == expected


def test_from_sae_rejects_what_it_cannot_shard():
    sae = make_sae(SAEConfig(d_in=4, d_sae=8, architecture="batchtopk", k=2))
    with pytest.raises(ValueError, match="shards an untied topk SAE"):
        LatentShardedTopK.from_sae(sae)
