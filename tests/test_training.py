"""Trainer: config validation, schedules, invariants, dead latents, init tricks, resume."""

import itertools
import json

import numpy as np
import pytest
import scipy.optimize
import torch
from safetensors.torch import load_file

from saelib.data import ShardedBatches, TensorBatches, batches_from_step, write_shards
from saelib.initialisation import geometric_median
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer


def small_data(n=512, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + 3.0


def quiet(**kw):
    kw.setdefault("n_steps", 20)
    return TrainConfig(progress=False, **kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_steps=0), "n_steps must be an integer >= 1"),
        (dict(lr=0), "lr must be a number > 0"),
        (dict(sparsity_coeff=-1.0), "sparsity_coeff must be a number >= 0"),
        (dict(betas=(0.9, 1.0)), r"betas must be two numbers in \[0, 1\)"),
        (dict(lr_warmup_steps=8, lr_decay_steps=8), "lr_warmup_steps \\+ lr_decay_steps"),
        (dict(init_b_dec="median"), r"init_b_dec must be one of \['zeros', 'mean'"),
        (dict(aux_k=0), "aux_k must be an integer >= 1"),
        (dict(checkpoint_every=5), "checkpoint_every needs checkpoint_dir"),
        (dict(sparsity_warmup_steps=1.5), "sparsity_warmup_steps must be an integer >= 0"),
        (dict(eps=0.0), "eps must be a number > 0"),
        (dict(dead_after_tokens=0), "dead_after_tokens must be an integer >= 1"),
        (dict(log_every=0), "log_every must be an integer >= 1"),
        (dict(orthogonality_coeff=-0.1), "orthogonality_coeff must be a number >= 0"),
        (dict(orthogonality_power=0), "orthogonality_power must be a number > 0"),
        (dict(device="gpu"), "device must be a torch device such as 'cpu'"),
    ],
)
def test_config_errors_name_the_parameter(kw, match):
    kw.setdefault("n_steps", 10)
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_schedules():
    cfg = TrainConfig(n_steps=10, lr=1.0, lr_warmup_steps=2, lr_decay_steps=4)
    assert [cfg.lr_at(s) for s in range(10)] == [0.5, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25]
    cfg = TrainConfig(n_steps=10, sparsity_coeff=2.0, sparsity_warmup_steps=4)
    assert [cfg.sparsity_coeff_at(s) for s in range(6)] == [0.5, 1, 1.5, 2, 2, 2]


@pytest.mark.parametrize("arch", ["relu", "topk", "gated", "mlp"])
def test_unit_norm_decoder_and_projected_gradient(arch):
    k = 3 if arch == "topk" else None
    sae = make_sae(SAEConfig(d_in=8, d_sae=16, architecture=arch, k=k))
    trainer = Trainer(sae, quiet(lr=1e-2, sparsity_coeff=0.1))
    trainer.fit(TensorBatches(small_data(), 64))
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(16))
    # the projected gradient has no component along any atom
    sae.zero_grad()
    sae.loss(small_data(64), 0.1).total.backward()
    sae.project_decoder_grad_()
    parallel = (sae.W_dec.grad * sae.W_dec).sum(-1)
    assert parallel.abs().max() < 1e-5
    # and without the constraint the norms do move (gated refuses: its L1 is plain)
    free = make_sae(SAEConfig(d_in=8, d_sae=16, architecture=arch, k=k))
    if arch == "gated":
        with pytest.raises(
            ValueError, match="normalize_decoder=False cannot train this .* SAE: a plain L1"
        ):
            Trainer(free, quiet(normalize_decoder=False))
        return
    Trainer(free, quiet(lr=1e-2, normalize_decoder=False)).fit(TensorBatches(small_data(), 64))
    assert (free.W_dec.norm(dim=-1) - 1).abs().max() > 1e-3


def test_fit_projects_the_decoder_gradient_every_step(monkeypatch):
    sae = make_sae(SAEConfig(d_in=8, d_sae=16))
    calls = []
    real = type(sae).project_decoder_grad_
    monkeypatch.setattr(type(sae), "project_decoder_grad_", lambda s: calls.append(1) or real(s))
    Trainer(sae, quiet(n_steps=7)).fit(TensorBatches(small_data(), 64))
    assert len(calls) == 7
    calls.clear()
    Trainer(sae, quiet(n_steps=3, normalize_decoder=False)).fit(TensorBatches(small_data(), 64))
    assert calls == []


def test_geometric_median_against_scipy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    x[:10] += 50.0  # outliers pull the mean, not the median
    ours = geometric_median(x, n_iter=500, tol=1e-12).numpy()

    def objective(m):
        return np.linalg.norm(x.numpy() - m, axis=1).sum()

    ref = scipy.optimize.minimize(
        objective,
        x.mean(0).numpy(),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
    )
    assert objective(ours) <= objective(ref.x) + 1e-6
    np.testing.assert_allclose(ours, ref.x, atol=1e-3)
    assert np.linalg.norm(ours) < np.linalg.norm(x.mean(0).numpy()) / 3


def test_init_tricks_are_applied():
    x = small_data()
    sae = make_sae(SAEConfig(d_in=8, d_sae=16))
    trainer = Trainer(sae, quiet(n_steps=1, lr=1e-12, init_b_dec="mean"))
    trainer.fit(TensorBatches(x, 64, shuffle=False))
    torch.testing.assert_close(sae.b_dec.detach(), x[:64].mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(sae.W_enc.detach(), sae.W_dec.detach().T, atol=1e-6, rtol=0)


def _topk_with_dead_latents():
    sae = make_sae(SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2))
    with torch.no_grad():
        sae.b_enc[4:] = 100.0  # latents 0-3 never win the top-k, though often positive
    return sae


def test_dead_latent_tracking_and_aux_k():
    x = small_data()
    plain = _topk_with_dead_latents()
    w0 = plain.W_enc.detach().clone()
    trainer = Trainer(plain, quiet(dead_after_tokens=128, init_encoder_from_decoder=False))
    history = trainer.fit(TensorBatches(x, 64))
    dead = trainer.tokens_since_fired >= 128
    assert dead[:4].all()
    assert history[-1]["dead_fraction"] >= 4 / 16
    assert trainer.tokens_since_fired[:4].tolist() == [20 * 64] * 4
    assert torch.equal(plain.W_enc[:, :4], w0[:, :4])  # no gradient ever reached them

    revived = _topk_with_dead_latents()
    trainer = Trainer(
        revived, quiet(dead_after_tokens=128, aux_k=16, init_encoder_from_decoder=False)
    )
    history = trainer.fit(TensorBatches(x, 64))
    assert "aux_k" in history[-1] and history[-1]["aux_k"] > 0
    assert not torch.equal(revived.W_enc[:, :4], w0[:, :4])  # aux-k trains the dead


class Interrupting:
    """Batches that raise KeyboardInterrupt once, after ``after`` batches (a Ctrl-C)."""

    def __init__(self, inner, after):
        self.inner, self.after, self.fired = inner, after, False

    def iter_from(self, step):
        for i, batch in enumerate(self.inner.iter_from(step), start=step):
            if not self.fired and i == self.after:
                self.fired = True
                raise KeyboardInterrupt
            yield batch


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu"])
def test_interrupted_and_resumed_run_ends_with_same_weights(tmp_path, arch):
    x = small_data(1024)
    k = 3 if arch in ("topk", "batchtopk") else None
    sae_cfg = SAEConfig(d_in=8, d_sae=16, architecture=arch, k=k, seed=1, bandwidth=0.5)
    train_cfg = dict(
        n_steps=30,
        lr=1e-2,
        lr_warmup_steps=5,
        lr_decay_steps=10,
        sparsity_coeff=0.01,
        sparsity_warmup_steps=10,
        aux_k=4,
        dead_after_tokens=64,
        init_b_dec="geometric_median",
    )
    reference = make_sae(sae_cfg)
    Trainer(reference, quiet(**train_cfg)).fit(TensorBatches(x, 64, seed=5))

    ckpt = tmp_path / "ckpt"
    cfg = quiet(**train_cfg, checkpoint_dir=str(ckpt), checkpoint_every=7)
    data = Interrupting(TensorBatches(x, 64, seed=5), after=17)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_sae(sae_cfg), cfg).fit(data)
    assert json.loads((ckpt / "trainer.json").read_text())["step"] == 17

    resumed = Trainer.from_checkpoint(ckpt)  # a new process would do exactly this
    assert resumed.step == 17
    resumed.fit(data)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(resumed.sae.state_dict()[name], tensor, rtol=0, atol=0)
    # the checkpoint on disk holds the final weights too
    final = load_file(ckpt / "sae.safetensors")
    torch.testing.assert_close(final["W_dec"], reference.W_dec.detach(), rtol=0, atol=0)


def test_checkpoint_for_another_sae_is_refused(tmp_path):
    x = small_data()
    cfg = quiet(n_steps=3, checkpoint_dir=str(tmp_path / "c"))
    Trainer(make_sae(SAEConfig(d_in=8, d_sae=16)), cfg).fit(TensorBatches(x, 64))
    with pytest.raises(ValueError, match="checkpoint in .* is for"):
        Trainer(make_sae(SAEConfig(d_in=8, d_sae=32)), cfg).fit(TensorBatches(x, 64))


def test_tensor_batches_deterministic_and_resumable():
    x = torch.arange(40.0).view(20, 2)
    a = TensorBatches(x, 6, seed=3)
    stream = iter(a)
    first = [next(stream) for _ in range(8)]  # crosses two epochs (3 batches each)
    tail = a.iter_from(5)
    for expected in first[5:]:
        assert torch.equal(next(tail), expected)
    epoch0 = torch.cat(first[:3])[:, 0]
    assert len(set(epoch0.tolist())) == 18  # no repeats within an epoch
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, 20\]"):
        TensorBatches(x, 21)


def test_sharded_batches_stream_from_disk(tmp_path):
    x = torch.arange(200.0).view(100, 2)
    paths = write_shards(x, tmp_path, rows_per_shard=30)  # shards of 30, 30, 30, 10
    assert len(paths) == 4
    data = ShardedBatches(paths, batch_size=10, seed=1)
    assert data.per_pass == 10
    stream = iter(data)
    seen = torch.cat([next(stream) for _ in range(10)])
    assert sorted(seen[:, 0].tolist()) == x[:, 0].tolist()  # one pass = every row once
    again = [next(stream) for _ in range(4)]
    tail = data.iter_from(10)
    for expected in again:
        assert torch.equal(next(tail), expected)
    sae = make_sae(SAEConfig(d_in=2, d_sae=4))
    Trainer(sae, quiet(n_steps=12)).fit(data)  # trains from the file-backed stream
    with pytest.raises(ValueError, match="no tensor named 'acts'"):
        ShardedBatches(paths, batch_size=10, key="acts")


def test_resume_refuses_changed_training_settings(tmp_path):
    x = small_data()
    cfg = quiet(n_steps=3, lr=1e-2, checkpoint_dir=str(tmp_path / "c"))
    Trainer(make_sae(SAEConfig(d_in=8, d_sae=16)), cfg).fit(TensorBatches(x, 64))
    other = quiet(n_steps=3, lr=1e-4, sparsity_coeff=5.0, checkpoint_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="lr: 0.01 -> 0.0001, sparsity_coeff: 0.0 -> 5.0"):
        Trainer(make_sae(SAEConfig(d_in=8, d_sae=16)), other).fit(TensorBatches(x, 64))
    # settings that do not change the weights may differ
    relogged = quiet(n_steps=3, lr=1e-2, checkpoint_dir=str(tmp_path / "c"), log_every=1)
    Trainer(make_sae(SAEConfig(d_in=8, d_sae=16)), relogged).fit(TensorBatches(x, 64))


def test_a_crash_between_renames_leaves_a_usable_checkpoint(tmp_path):
    ckpt = tmp_path / "c"
    trainer = Trainer(
        make_sae(SAEConfig(d_in=8, d_sae=16)), quiet(n_steps=4, checkpoint_dir=str(ckpt))
    )
    trainer.fit(TensorBatches(small_data(), 64))
    ckpt.rename(tmp_path / "c.old")  # as if killed after moving the old one aside
    resumed = Trainer.from_checkpoint(ckpt)
    assert resumed.step == 4
    torch.testing.assert_close(resumed.sae.W_dec, trainer.sae.W_dec, rtol=0, atol=0)
    with pytest.raises(ValueError, match="no checkpoint"):
        Trainer.from_checkpoint(tmp_path / "elsewhere")


def test_running_out_of_batches_is_a_clear_error():
    with pytest.raises(ValueError, match="batches ran out after 2 of n_steps=5"):
        Trainer(make_sae(SAEConfig(d_in=8, d_sae=16)), quiet(n_steps=5)).fit([small_data(64)] * 2)


def test_resuming_a_plain_iterator_warns():
    trainer = Trainer(make_sae(SAEConfig(d_in=8, d_sae=16)), quiet(n_steps=2))
    trainer.step = 1  # as if restored from a checkpoint half way
    with pytest.warns(UserWarning, match="iterator without iter_from"):
        trainer.fit(iter(TensorBatches(small_data(), 64)))


def test_batches_from_step_restarts_a_source_where_it_was():
    source = TensorBatches(small_data(), 64, seed=1)
    fourth = list(itertools.islice(iter(source), 4))[3]
    assert torch.equal(next(batches_from_step(source, 3)), fourth)  # through iter_from
    listed = [torch.full((2, 8), float(i)) for i in range(5)]
    assert [int(b[0, 0]) for b in batches_from_step(listed, 2)] == [2, 3, 4]  # skipped
