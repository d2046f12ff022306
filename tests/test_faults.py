"""Fault injection: killed runs, damaged checkpoints and shards, poisoned data, bad input.

Each test reproduces one fault of issue 17 and checks that the user gets either the right
result or an error naming the file or parameter, the value and what to do.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from saelib.data import TensorBatches
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

SAE_CFG = SAEConfig(d_in=8, d_sae=16, architecture="topk", k=3, seed=1)
TRAIN = dict(n_steps=12, lr=1e-2, lr_decay_steps=4, aux_k=4, dead_after_tokens=64)


def data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g) + 3.0


def batches():
    return TensorBatches(data(), 64, seed=5)


def config(**kw):
    return TrainConfig(progress=False, **(TRAIN | kw))


@pytest.fixture(scope="module")
def reference():
    """The weights of an uninterrupted run."""
    trainer = Trainer(make_sae(SAE_CFG), config())
    trainer.fit(batches())
    return trainer.sae.state_dict()


def assert_same_weights(sae, reference):
    for name, tensor in reference.items():
        torch.testing.assert_close(sae.state_dict()[name], tensor, rtol=0, atol=0)


def train_until(ckpt: Path, step: int, every: int = 3) -> Trainer:
    """A run checkpointing every ``every`` steps, stopped after ``step`` (as if killed)."""
    trainer = Trainer(make_sae(SAE_CFG), config(checkpoint_dir=str(ckpt), checkpoint_every=every))
    stream = iter(batches())
    first = next(stream)
    trainer._initialise(first)
    trainer.train_step(first)
    while trainer.step < step:
        trainer.train_step(next(stream))
        if trainer.step % every == 0:
            trainer.save_checkpoint(ckpt)
    return trainer


def flip_bit(path: Path, at: int = 5) -> None:
    """Flip the top bit of byte ``at`` of the tensor data (after the safetensors header)."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start + at] ^= 0x80
    path.write_bytes(bytes(raw))


# -- 1, 2: checkpoints that verify themselves, with fallback to the previous one ---------
@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda c: flip_bit(c / "sae.safetensors"), "sae.safetensors: sha256 differs"),
        (lambda c: flip_bit(c / "optimizer.safetensors", 41), "optimizer.safetensors: sha256"),
        (lambda c: flip_bit(c / "trainer.safetensors"), "trainer.safetensors: sha256"),
        (lambda c: (c / "trainer.json").write_text("{"), "trainer.json: sha256 differs"),
        (lambda c: (c / "checksums.json").write_text("{"), "checksums.json: not valid JSON"),
        (lambda c: (c / "sae.safetensors").unlink(), "sae.safetensors: file not found"),
    ],
    ids=["sae-bit", "optimizer-bit", "counters-bit", "json", "checksums-json", "missing"],
)
def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, damage, match):
    ckpt = tmp_path / "c"
    train_until(ckpt, 6)  # checkpoints at 3 (kept as c.old) and 6 (c)
    assert json.loads((tmp_path / "c.old" / "trainer.json").read_text())["step"] == 3
    damage(ckpt)
    with pytest.warns(UserWarning, match=f"{ckpt} is damaged: .*{match}.*resuming from the "):
        resumed = Trainer.from_checkpoint(ckpt)
    assert resumed.step == 3
    resumed.fit(batches())
    assert_same_weights(resumed.sae, reference)


def test_truncated_checkpoints_name_the_file_and_what_to_do(tmp_path):
    ckpt = tmp_path / "c"
    train_until(ckpt, 6)
    for folder in (ckpt, tmp_path / "c.old"):
        path = folder / "sae.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"no intact checkpoint in .*c: .*c/sae.safetensors: "):
        Trainer.from_checkpoint(ckpt)
    with pytest.raises(ValueError, match=r"delete .*c \(and .*c.old\) to train from the start"):
        Trainer(make_sae(SAE_CFG), config(checkpoint_dir=str(ckpt))).fit(batches())


def test_checkpoint_without_checksums_loads_with_a_warning(tmp_path, reference):
    """A checkpoint saved before checksums existed (no checksums.json, no new settings)."""
    ckpt = tmp_path / "c"
    train_until(ckpt, 6)
    shutil.rmtree(tmp_path / "c.old")
    (ckpt / "checksums.json").unlink()
    meta = json.loads((ckpt / "trainer.json").read_text())
    del meta["train_config"]["on_nonfinite"], meta["skipped"]
    (ckpt / "trainer.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="has no checksums.json .* loading it unverified"):
        resumed = Trainer.from_checkpoint(ckpt)
    resumed.fit(batches())
    assert_same_weights(resumed.sae, reference)
    assert (ckpt / "checksums.json").is_file()  # the next save adds them


def test_unverified_checkpoint_with_non_finite_weights_is_damaged(tmp_path):
    ckpt = tmp_path / "c"
    train_until(ckpt, 3)
    (ckpt / "checksums.json").unlink()
    tensors = load_file(ckpt / "sae.safetensors")
    tensors["b_enc"][0] = float("nan")
    save_file(tensors, ckpt / "sae.safetensors")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="'b_enc' has NaN or inf"):
        Trainer.from_checkpoint(ckpt)


# -- 3: a checkpoint folder is self-locating --------------------------------------------
def test_copied_checkpoint_resumes_the_copy(tmp_path, reference):
    original, copy = tmp_path / "original", tmp_path / "copy"
    train_until(original, 6)
    shutil.copytree(original, copy)
    Trainer.from_checkpoint(original).fit(batches())  # the original runs to the end
    finished = (original / "sae.safetensors").read_bytes()

    resumed = Trainer.from_checkpoint(copy)
    assert resumed.cfg.checkpoint_dir == str(copy) and resumed.step == 6
    resumed.fit(batches())
    assert_same_weights(resumed.sae, reference)
    assert json.loads((copy / "trainer.json").read_text())["step"] == TRAIN["n_steps"]
    assert (original / "sae.safetensors").read_bytes() == finished  # untouched


def test_moved_checkpoint_never_recreates_the_old_path(tmp_path, reference):
    original, moved = tmp_path / "original", tmp_path / "moved"
    train_until(original, 6)
    original.rename(moved)
    shutil.rmtree(tmp_path / "original.old", ignore_errors=True)  # moved without its .old
    resumed = Trainer.from_checkpoint(moved)
    resumed.fit(batches())
    assert_same_weights(resumed.sae, reference)
    assert not original.exists() and not (tmp_path / "original.old").exists()


# -- killed at random points, including in the middle of a save --------------------------
KILLED_RUN = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_faults import batches, config, LONG, SAE_CFG
    from saelib.saes import make_sae
    from saelib.training import Trainer

    kind, n = os.environ.get("KILL_AT", "none:0").split(":")
    calls = [0]
    def dying(original):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            if calls[0] == int(n):
                os._exit(9)  # no cleanup, as SIGKILL
            return original(*args, **kwargs)
        return wrapper
    if kind == "write":
        Path.write_bytes = dying(Path.write_bytes)
    elif kind == "rename":
        Path.rename = dying(Path.rename)
    ckpt = {ckpt!r}
    trainer = Trainer(make_sae(SAE_CFG), config(**LONG, checkpoint_dir=ckpt, checkpoint_every=1))
    trainer.fit(batches())
    """
)


LONG = dict(n_steps=300, lr_decay_steps=50)


@pytest.fixture(scope="module")
def long_reference():
    trainer = Trainer(make_sae(SAE_CFG), config(**LONG))
    trainer.fit(batches())
    return trainer.sae.state_dict()


# write:13 dies before the third file of the third save (c.tmp is half written);
# rename:5 between the third save's renames (c.old and a whole c.tmp exist, c does not);
# sigkill at a random step (about 50 steps in), perhaps in the middle of a save
@pytest.mark.parametrize("kill", ["write:13", "rename:5", "sigkill:0.2"])
def test_killed_run_resumes_to_the_same_weights(tmp_path, long_reference, kill):
    ckpt = tmp_path / "c"
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), ckpt=str(ckpt))
    env = {**os.environ, "KILL_AT": kill, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    if kill.startswith("sigkill"):
        deadline = time.monotonic() + 120
        while not (ckpt / "checksums.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(float(kill.split(":")[1]))
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode in (9, -9), proc.stderr.read().decode()[-2000:]

    resumed = Trainer.from_checkpoint(ckpt)
    assert 1 <= resumed.step < LONG["n_steps"]
    resumed.fit(batches())
    assert_same_weights(resumed.sae, long_reference)
