"""Data-parallel training (2 gloo processes on CPU) against one process on the same batches.

Every test here starts two processes (``run_local``, or torchrun): about 10 s a launch on
a loaded 2-core machine, mostly the import of torch in each child; several configurations
share one launch. Marked ``distributed`` (``make distributed``).
"""

import os

import numpy as np
import pytest
import torch
from torchrun_dying import DyingTensors

from saelib.data import TensorBatches
from saelib.data_parallel import DataParallelTrainer
from saelib.distributed import run_local
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

pytestmark = pytest.mark.distributed

# Tolerances, fixed before the first run. Both runs take the same steps on the same
# batches; they differ only in the order of float additions (the gradient of a batch
# mean is summed over one batch, or over two halves and then averaged), about 1 ulp of a
# gradient per step, which Adam's normalised update turns into at most a similar
# relative change of an lr-sized step. In float64 (ulp 2e-16) 30 steps of lr 1e-2 stay
# far below 1e-9; in float32 (ulp 1.2e-7) below 1e-4. Dead-latent counters are integers
# and must agree exactly.
ATOL = {"float64": 1e-9, "float32": 1e-4}

CASES = {
    # name: (SAEConfig kwargs, TrainConfig kwargs)
    "topk_aux": (
        dict(architecture="topk", k=3),
        dict(aux_k=4, dead_after_tokens=64),
    ),
    "batchtopk_sparse": (dict(architecture="batchtopk", k=3), dict()),
    "batchtopk_dense": (dict(architecture="batchtopk", k=3), dict(sparse_topk=False)),
    "relu_l1": (dict(architecture="relu"), dict(sparsity_coeff=3e-3, init_b_dec="mean")),
}


def _data(dtype: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g) @ torch.randn(8, 8, generator=g) + 1.0
    return x.to(getattr(torch, dtype))


def _train(name, dtype, parallel, checkpoint_dir=None, n_steps=30, **extra):
    sae_kw, train_kw = CASES[name]
    sae = make_sae(SAEConfig(d_in=8, d_sae=32, seed=1, **sae_kw)).to(getattr(torch, dtype))
    cfg = TrainConfig(
        n_steps=n_steps,
        lr=1e-2,
        log_every=10,
        progress=False,
        checkpoint_dir=checkpoint_dir,
        **{**train_kw, **extra},
    )
    trainer = (DataParallelTrainer if parallel else Trainer)(sae, cfg)
    trainer.fit(TensorBatches(_data(dtype), batch_size=32, seed=3))
    return {
        "state": {k: v.clone() for k, v in trainer.sae.state_dict().items()},
        "tokens_since_fired": trainer.tokens_since_fired.clone(),
        "history": trainer.history,
        "tokens_seen": trainer.tokens_seen,
    }


def _parallel_cases(rank, names, dtypes):
    return {(n, d): _train(n, d, parallel=True) for d in dtypes for n in names}


def _compare(single, parallel, atol):
    for key, value in single["state"].items():
        np.testing.assert_allclose(parallel["state"][key], value.numpy(), rtol=0, atol=atol)
    np.testing.assert_array_equal(parallel["tokens_since_fired"], single["tokens_since_fired"])
    assert parallel["tokens_seen"] == single["tokens_seen"]
    for a, b in zip(parallel["history"], single["history"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def test_data_parallel_equals_one_process(one_thread):
    names, dtypes = list(CASES), list(ATOL)
    ranks = run_local(_parallel_cases, 2, (names, dtypes), timeout_s=300)
    for dtype in dtypes:
        for name in names:
            single = _train(name, dtype, parallel=False)
            # both ranks hold the same weights, and they are the one-process weights
            for rank in ranks:
                _compare(single, rank[name, dtype], ATOL[dtype])
            # not trivially equal: the SAE moved
            start = make_sae(SAEConfig(d_in=8, d_sae=32, seed=1, **CASES[name][0]))
            moved = (single["state"]["W_dec"].float() - start.W_dec).abs().max()
            assert moved > 1e-2, name
    topk = _train("topk_aux", "float64", parallel=False)
    assert (topk["tokens_since_fired"] >= 64).any()  # dead latents entered aux-k


def _batchtopk_trainer(directory, parallel):
    sae = make_sae(SAEConfig(d_in=8, d_sae=32, architecture="batchtopk", k=3, seed=1))
    cfg = TrainConfig(
        n_steps=20, lr=1e-2, progress=False, checkpoint_dir=directory, checkpoint_every=5
    )
    return (DataParallelTrainer if parallel else Trainer)(sae.double(), cfg)


def _killed_then_resumed(rank, directory, kill_at):
    """Train with checkpoints every 5 steps; rank 1 dies (SIGKILL) after step ``kill_at``."""
    trainer = _batchtopk_trainer(directory, parallel=True)
    trainer.fit(DyingTensors(kill_at, _data("float64"), batch_size=32, seed=3))
    return {"state": trainer.sae.state_dict(), "step": trainer.step}


def test_killed_rank_stops_the_run_and_it_resumes_to_the_same_weights(tmp_path, one_thread):
    directory = str(tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match=r"rank 1 died \(killed by signal 9\)"):
        run_local(_killed_then_resumed, 2, (directory, 12), timeout_s=120)
    from saelib.checkpoint import load_newest

    _, _, meta = load_newest(directory)
    assert meta["step"] == 10  # the last periodic checkpoint before the kill
    resumed = run_local(_killed_then_resumed, 2, (directory, None), timeout_s=120)
    assert resumed[0]["step"] == resumed[1]["step"] == 20
    for key, value in resumed[0]["state"].items():
        np.testing.assert_array_equal(resumed[1]["state"][key], value)
    # one process, uninterrupted, on the same batches: equal to float64 tolerance
    straight = _batchtopk_trainer(str(tmp_path / "straight"), parallel=False)
    straight.fit(TensorBatches(_data("float64"), batch_size=32, seed=3))
    for key, value in straight.sae.state_dict().items():
        np.testing.assert_allclose(resumed[0]["state"][key], value.numpy(), rtol=0, atol=1e-9)


def _raises_on_rank_1(rank):
    if rank == 1:
        raise ValueError("bad shard on purpose")
    torch.distributed.barrier()  # rank 0 waits for a peer that will never come


def test_failing_rank_is_named_and_nothing_hangs():
    with pytest.raises(RuntimeError, match=r"(?s)rank 1 failed.*bad shard on purpose"):
        run_local(_raises_on_rank_1, 2, timeout_s=60)


def _sleeps(rank):
    import time

    time.sleep(60)


def test_timeout_kills_the_ranks():
    with pytest.raises(TimeoutError, match=r"ranks \[0, 1\] still running after timeout_s=3"):
        run_local(_sleeps, 2, timeout_s=3)


def test_trainer_needs_a_process_group():
    sae = make_sae(SAEConfig(d_in=8, d_sae=32, architecture="topk", k=3))
    with pytest.raises(RuntimeError, match="needs a torch.distributed process group"):
        DataParallelTrainer(sae, TrainConfig(n_steps=1, progress=False))


def test_torchrun_kill_then_resume_equals_one_process(tmp_path, one_thread):
    """Under torchrun: rank 1 is killed at step 12, the launch fails naming it; the same
    command resumes from rank 0's step-10 checkpoint and ends at the one-process weights."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from saelib.checkpoint import load_newest
    from saelib.data import write_shards
    from saelib.lm import launch

    shards = write_shards(_data("float32"), tmp_path / "shards", rows_per_shard=128)
    config = {
        "sae": SAEConfig(d_in=8, d_sae=32, architecture="batchtopk", k=3, seed=1).to_dict(),
        "train": dict(n_steps=20, lr=1e-2, progress=False, checkpoint_every=5),
        "data": {"shards": [str(p) for p in shards]},
        "batch_size": 32,
        "seed": 3,
    }
    config["train"]["checkpoint_dir"] = str(tmp_path / "dist")
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc_per_node", "2", "--max-restarts", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    here = Path(__file__).parent
    dying = subprocess.run(
        [*torchrun, str(here / "torchrun_dying.py"), str(path), "12"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert dying.returncode != 0
    assert "local_rank: 1" in dying.stderr and "Signal 9" in dying.stderr, dying.stderr[-2000:]
    assert load_newest(tmp_path / "dist")[2]["step"] == 10
    resumed = subprocess.run(
        [*torchrun, "-m", "saelib.lm.launch", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["step"] == 20
    config["train"]["checkpoint_dir"] = str(tmp_path / "single")
    single = launch.run(config)
    _, tensors, meta = load_newest(tmp_path / "dist")
    assert meta["step"] == 20
    for key, value in single.sae.state_dict().items():
        np.testing.assert_allclose(tensors["sae"][key], value, rtol=0, atol=ATOL["float32"])
    np.testing.assert_array_equal(
        tensors["trainer"]["tokens_since_fired"], single.tokens_since_fired
    )
