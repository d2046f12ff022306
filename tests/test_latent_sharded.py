"""Latent-sharded TopK (2 gloo processes) against the unsharded TopK SAE: codes, loss and
gradients, ties at the k-th value, finite differences, and the world-size pitfall."""

import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torchrun_dying import DyingTensors

from saelib import losses
from saelib.checkpoint import load_newest
from saelib.data import TensorBatches
from saelib.distributed import run_local
from saelib.latent_sharded import LATENT_DIMS, LatentShardedTopK, shard_bounds
from saelib.latent_sharded_training import (
    LatentShardedTrainer,
    _common_steps,
    load_sharded_sae,
    shard_dir,
)
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

K, D_IN, D_SAE = 3, 6, 11  # 11 latents: blocks of 6 and 5
NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")
AUX_DEAD, AUX_K = (0, 2, 3, 7, 9, 10), 4  # dead latents: 3 in each block, k_aux 4


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


def _block_grads(sae, lo, hi):
    """The gradients of the unsharded ``sae`` that the block of latents ``lo .. hi - 1`` holds."""
    grads = {n: getattr(sae, n).grad for n in NAMES}
    return {
        n: g.narrow(LATENT_DIMS[n], lo, hi - lo) if n in LATENT_DIMS else g
        for n, g in grads.items()
    }


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

    # aux-k alone: dead latents in both blocks, more of them than k_aux in neither
    aux = LatentShardedTopK.from_sae(sae)
    out = aux(x)
    residual = (x - out.x_hat).detach()
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[list(AUX_DEAD)] = True
    aux_loss = aux.aux_k_loss(x, residual, out, dead[aux.lo : aux.hi], AUX_K)
    aux_loss.backward()
    result.update(aux_loss=aux_loss.detach(), aux_grads=_grads(aux))

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
        full = _block_grads(sae, r["lo"], r["hi"])
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

    # aux-k: the unsharded losses.aux_k on the same dead latents, value and gradients
    sae = _sae()
    out = sae(x)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[list(AUX_DEAD)] = True
    aux_loss = losses.aux_k((x - out.x_hat).detach(), out.pre_acts, dead, sae.W_dec, AUX_K)
    aux_loss.backward()
    aux_loss = float(aux_loss.detach())
    assert aux_loss > 1e-3
    for r in ranks:
        assert r["aux_loss"] == pytest.approx(aux_loss, rel=1e-12)
        full = _block_grads(sae, r["lo"], r["hi"])
        for name in NAMES:
            np.testing.assert_allclose(r["aux_grads"][name], full[name].numpy(), 1e-10, 1e-13)

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


# -- training: LatentShardedTrainer against the Trainer on the unsharded SAE -------------
# Tolerances fixed before the first run, as in tests/test_data_parallel.py: the runs take
# the same steps on the same batches and differ only in the order of float additions (the
# reconstruction summed over two blocks, the dense codes against the sparse path).
TRAIN_ATOL = {"float64": 1e-9, "float32": 1e-4}
TRAIN_SAE = dict(d_in=8, d_sae=33, architecture="topk", k=3, seed=1)  # blocks of 17 and 16
TRAIN = dict(n_steps=20, lr=1e-2, log_every=5, progress=False, aux_k=4, dead_after_tokens=64)


def _train_data(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g) @ torch.randn(8, 8, generator=g) + 1.0
    return x.to(getattr(torch, dtype))


def _train_batches(dtype):
    return TensorBatches(_train_data(dtype), batch_size=32, seed=3)


def _train_sae(dtype):
    return make_sae(SAEConfig(**TRAIN_SAE)).to(getattr(torch, dtype))


def _sharded_trainer(dtype, directory, **extra):
    every = 5 if directory else 0
    cfg = TrainConfig(**TRAIN, checkpoint_dir=directory, checkpoint_every=every, **extra)
    return LatentShardedTrainer(_train_sae(dtype), cfg)


def _sharded_run(trainer, dtype, batches=None):
    trainer.fit(batches or _train_batches(dtype))
    blocks = trainer.sae
    return {
        "state": trainer.sae.gather_sae().state_dict(),
        "tokens_since_fired": blocks.gather_blocks(trainer.tokens_since_fired, 0),
        "b_dec": blocks.b_dec.detach().clone(),  # this rank's copy
        "history": trainer.history,
        "step": trainer.step,
    }


def _train_sharded(rank, directory):
    result = {}
    for dtype in TRAIN_ATOL:
        result[dtype] = _sharded_run(_sharded_trainer(dtype, f"{directory}/{dtype}"), dtype)
    # a new trainer on the finished checkpoint: restores step 20 and stops there
    again = _sharded_trainer("float64", f"{directory}/float64")
    result["again"] = _sharded_run(again, "float64")
    result["again_restored"] = str(again.restored_from)

    errors = {}
    alone = dist.new_group([0])  # every rank takes part in making a group
    if rank == 0:  # one rank resuming the checkpoint of two
        cfg = TrainConfig(**TRAIN, checkpoint_dir=f"{directory}/float64")
        try:
            LatentShardedTrainer(_train_sae("float64"), cfg, group=alone).fit(
                _train_batches("float64")
            )
        except ValueError as err:
            errors["world_size"] = str(err)
    try:
        _sharded_trainer("float64", None, orthogonality_coeff=0.1)
    except ValueError as err:
        errors["orthogonality"] = str(err)
    try:
        seed = dict(TRAIN_SAE, seed=rank)  # ranks that disagree on the SAE
        LatentShardedTrainer(make_sae(SAEConfig(**seed)), TrainConfig(n_steps=1))
    except ValueError as err:
        errors["configs"] = str(err)
    try:  # fewer latents than ranks
        narrow = SAEConfig(d_in=8, d_sae=1, architecture="topk", k=1)
        LatentShardedTrainer(make_sae(narrow), TrainConfig(n_steps=1))
    except ValueError as err:
        errors["narrow"] = str(err)
    result["errors"] = errors
    return result


def _single_process(dtype):
    trainer = Trainer(_train_sae(dtype), TrainConfig(**TRAIN))
    trainer.fit(_train_batches(dtype))
    return trainer


@pytest.mark.distributed
def test_sharded_training_equals_one_process(tmp_path, one_thread):
    ranks = run_local(_train_sharded, 2, (str(tmp_path),), timeout_s=180)
    for dtype, atol in TRAIN_ATOL.items():
        single = _single_process(dtype)
        start = _train_sae(dtype)
        assert (single.sae.W_dec - start.W_dec).abs().max() > 1e-2  # the SAE moved
        assert (single.tokens_since_fired >= 64).any()  # dead latents entered aux-k
        assert max(r["aux_k"] for r in single.history) > 0
        for r in ranks:
            run = r[dtype]
            assert run["step"] == 20
            for key, value in single.sae.state_dict().items():
                np.testing.assert_allclose(run["state"][key], value.numpy(), rtol=0, atol=atol)
            np.testing.assert_array_equal(run["tokens_since_fired"], single.tokens_since_fired)
            for a, b in zip(run["history"], single.history, strict=True):
                assert a.keys() == b.keys()
                for key in a:
                    assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-9), (dtype, key)
        # b_dec replicated exactly; both ranks gathered the same SAE
        np.testing.assert_array_equal(ranks[0][dtype]["b_dec"], ranks[1][dtype]["b_dec"])
        for key, value in ranks[0][dtype]["state"].items():
            np.testing.assert_array_equal(ranks[1][dtype]["state"][key], value)
        # the checkpoint, read in this one process, is the gathered SAE
        loaded = load_sharded_sae(tmp_path / dtype)
        for key, value in loaded.state_dict().items():
            np.testing.assert_array_equal(value.numpy(), ranks[0][dtype]["state"][key])
    again = ranks[0]["again"]
    assert ranks[0]["again_restored"].endswith("shard-0-of-2") and again["step"] == 20
    for key, value in again["state"].items():
        np.testing.assert_array_equal(value, ranks[0]["float64"]["state"][key])

    errors = ranks[0]["errors"]
    assert "holds the blocks of a run on [2] ranks" in errors["world_size"]
    assert "this run has 1: relaunch with torchrun --nproc_per_node 2" in errors["world_size"]
    assert "orthogonality_coeff=0.1 is not supported" in errors["orthogonality"]
    assert "every rank must pass the same SAE" in errors["configs"]
    assert "SAEConfig.d_sae=1 must be at least the 2 ranks" in errors["narrow"]
    assert {"configs", "narrow", "orthogonality"} <= set(ranks[1]["errors"])


def _killed_sharded(rank, directory, kill_at):
    """Sharded training with checkpoints every 5 steps; rank 1 dies (SIGKILL) at ``kill_at``."""
    trainer = _sharded_trainer("float64", directory)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = _sharded_run(
            trainer, "float64", DyingTensors(kill_at, _train_data("float64"), 32, seed=3)
        )
    run["warnings"] = [str(w.message) for w in caught]
    return run


@pytest.mark.distributed
def test_sharded_training_killed_resumes_to_the_same_weights(tmp_path, one_thread):
    directory = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match=r"rank 1 died \(killed by signal 9\)"):
        run_local(_killed_sharded, 2, (str(directory), 12), timeout_s=120)
    assert [load_newest(shard_dir(directory, r, 2))[2]["step"] for r in (0, 1)] == [10, 10]
    # as if rank 1 had died while saving step 10: its newest checkpoint is damaged
    damaged = shard_dir(directory, 1, 2) / "sae.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="sha256 differs"):
        assert load_sharded_sae(directory).cfg == SAEConfig(**TRAIN_SAE)  # step 5, readable

    ranks = run_local(_resume_then_straight, 2, (str(directory), str(tmp_path / "straight")))
    resumed, straight = [r["resumed"] for r in ranks], [r["straight"] for r in ranks]
    assert any("resumes from" in w and "(step 5)" in w for w in resumed[0]["warnings"])
    for r in range(2):
        assert resumed[r]["step"] == 20
        for key, value in straight[0]["state"].items():
            np.testing.assert_array_equal(resumed[r]["state"][key], value)  # bit for bit
        np.testing.assert_array_equal(
            resumed[r]["tokens_since_fired"], straight[0]["tokens_since_fired"]
        )
    assert resumed[0]["history"] == straight[0]["history"]


def _resume_then_straight(rank, directory, straight_dir):
    """The killed run resumed, then the same run uninterrupted (one launch for both)."""
    resumed = _killed_sharded(rank, directory, None)
    return {"resumed": resumed, "straight": _killed_sharded(rank, straight_dir, None)}


def test_sharded_trainer_needs_a_process_group():
    with pytest.raises(RuntimeError, match="LatentShardedTrainer needs a torch.distributed"):
        LatentShardedTrainer(_train_sae("float32"), TrainConfig(n_steps=1))


def test_load_sharded_sae_refuses_a_folder_of_no_or_mixed_runs(tmp_path):
    with pytest.raises(ValueError, match=r"of one latent-sharded run .* found world sizes \[\]"):
        load_sharded_sae(tmp_path)
    shard_dir(tmp_path, 0, 2).mkdir()
    shard_dir(tmp_path, 0, 3).mkdir()
    with pytest.raises(ValueError, match=r"found world sizes \[2, 3\]"):
        load_sharded_sae(tmp_path)


def test_common_steps_newest_first():
    assert _common_steps([[5, 10], [0, 5], [5, 10]]) == [5]
    assert _common_steps([[5, 10], [5, 10]]) == [10, 5]
    assert _common_steps([[10], [5]]) == []
