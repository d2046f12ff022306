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
# sigkill at a random step (tens of steps in), perhaps in the middle of a save
@pytest.mark.parametrize("kill", ["write:13", "rename:5", "sigkill:0.1"])
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


# -- 4: poisoned or wrong-dtype training data --------------------------------------------
def poisoned(row: int, value: float, batch: int = 2, n: int = 6) -> list[torch.Tensor]:
    """``n`` batches of 64 rows with ``value`` at (``row``, 3) of batch ``batch``."""
    parts = list(data(64 * n).split(64))
    parts[batch] = parts[batch].clone()
    parts[batch][row, 3] = value
    return parts


@pytest.mark.parametrize(
    "value, what", [(float("nan"), "1 NaN and 0 inf"), (float("inf"), "0 NaN and 1 inf")]
)
def test_non_finite_batch_stops_training_at_its_step(tmp_path, value, what):
    ckpt = tmp_path / "c"
    trainer = Trainer(make_sae(SAE_CFG), config(n_steps=6, checkpoint_dir=str(ckpt)))
    match = (
        rf"step 2 of n_steps=6: the loss is nan; the batch holds {what} values \(first in row 5\)"
    )
    with pytest.raises(ValueError, match=match + r".*drop or fix those rows.*on_nonfinite='skip'"):
        trainer.fit(poisoned(5, value))
    assert trainer.step == 2
    assert all(torch.isfinite(p).all() for p in trainer.sae.parameters())  # not stepped


def test_non_finite_first_batch_is_refused_before_initialising():
    trainer = Trainer(make_sae(SAE_CFG), config(n_steps=6, on_nonfinite="skip"))
    with pytest.raises(ValueError, match=r"first batch \(step 0, used to initialise b_dec\) holds"):
        trainer.fit(poisoned(7, float("nan"), batch=0))


def test_skipping_non_finite_batches_is_an_option():
    trainer = Trainer(make_sae(SAE_CFG), config(n_steps=6, on_nonfinite="skip", log_every=1))
    with pytest.warns(UserWarning, match="step 2 of n_steps=6: .*skipped this batch"):
        history = trainer.fit(poisoned(5, float("inf")))
    assert trainer.step == 6 and trainer.skipped == 1
    assert [r["skipped"] for r in history] == [0, 0, 1, 1, 1]  # step 3 was not recorded
    assert all(torch.isfinite(p).all() for p in trainer.sae.parameters())


def test_huge_data_stops_at_the_first_step_naming_the_scale():
    x = data() * 1e20
    trainer = Trainer(make_sae(SAE_CFG), config())
    with pytest.raises(
        FloatingPointError, match=r"step 0 of n_steps=12: .*largest \|x\| = [0-9.]+e\+20"
    ):
        trainer.fit(TensorBatches(x, 64))


def test_tensor_batches_refuse_non_finite_or_integer_data():
    x = data()
    x[100, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf in 1 rows \(first: row 100\)"):
        TensorBatches(x, 64)
    with pytest.raises(ValueError, match="x must be floating point .* got dtype torch.int64"):
        TensorBatches(data().long(), 64)
    trainer = Trainer(make_sae(SAE_CFG), config())
    with pytest.raises(ValueError, match="batch at step 0 has dtype torch.int64; .* x.float()"):
        trainer.fit([data(64).long()] * 12)
    with pytest.raises(
        ValueError, match=r"batch at step 0 must be a tensor \[batch, 8\], got \[64, 9\]"
    ):
        trainer.fit([torch.zeros(64, 9)] * 12)


def test_float64_and_half_data_are_cast_to_the_sae_dtype(reference):
    """The rule: batches take the SAE's dtype. float64 rounds to float32 (exactly here,
    as the data came from float32); float16 widens exactly."""
    trainer = Trainer(make_sae(SAE_CFG), config())
    trainer.fit(TensorBatches(data().double(), 64, seed=5))
    assert_same_weights(trainer.sae, reference)
    half = Trainer(make_sae(SAE_CFG), config())
    half.fit(TensorBatches(data().half(), 64, seed=5))
    assert half.sae.W_dec.dtype == torch.float32
    assert all(torch.isfinite(p).all() for p in half.sae.parameters())


# -- 5: activation caches checked while streaming --------------------------------------
HOOKS = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]


def harvest(tiny_lm, directory, tokens=None, **kwargs):
    from saelib.lm import activations

    if tokens is None:
        tokens = torch.randint(0, 64, (10, 16), generator=torch.Generator().manual_seed(0))
    settings = dict(corpus_sha256="abc", batch_size=3, rows_per_shard=64, progress=False)
    return activations.harvest(tiny_lm[0], tokens, HOOKS, directory, **(settings | kwargs))


def test_shard_damaged_after_opening_is_caught_while_streaming(tiny_lm, tmp_path):
    from saelib.lm.activations import open_cache

    harvest(tiny_lm, tmp_path)
    cache = open_cache(tmp_path)  # verified here
    data = cache.batches(HOOKS[0], batch_size=16)
    stream = iter(data)
    next(stream)  # shard 0 is in memory
    flip_bit(cache.paths(HOOKS[0])[1], at=100)
    match = r"shard .*shard_00001.safetensors does not match its sha256: .*harvest again"
    with pytest.raises(ValueError, match=match):
        for _ in range(data.per_pass):
            next(stream)
    with pytest.raises(ValueError, match=match):
        Trainer(make_sae(SAEConfig(d_in=32, d_sae=64)), config(n_steps=12)).fit(data)
    with pytest.raises(ValueError, match=match):
        cache.load(HOOKS[0])


def test_manifest_counts_are_checked_against_the_shards(tiny_lm, tmp_path):
    from saelib.lm.activations import open_cache

    cache = harvest(tiny_lm, tmp_path)
    good = json.loads((tmp_path / "manifest.json").read_text())

    def edited(change, match):
        manifest = json.loads(json.dumps(good))
        change(manifest)
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        for verify in (True, False):
            with pytest.raises(ValueError, match=match):
                open_cache(tmp_path, verify=verify)

    edited(lambda m: m.update(n_tokens=161), "n_tokens is 161, its .* shards hold 160")
    edited(
        lambda m: m["shards"][HOOKS[1]][0].update(rows=63),
        r"shard_00000.safetensors holds \[64, 32\] \(manifest: 63 rows\), expected \[64, 32\]",
    )
    edited(lambda m: [s.pop() for s in m["shards"].values()], "lists 2 shards per hook, 3 expected")
    # a shard replaced by a shorter one (its sha256 updated to match)
    path = cache.paths(HOOKS[0])[0]
    save_file({"activations": torch.zeros(48, 32)}, path)
    from saelib.files import sha256_file

    def replaced(m):
        m["shards"][HOOKS[0]][0]["sha256"] = sha256_file(path)

    edited(replaced, r"holds \[48, 32\] \(manifest: 64 rows\), expected \[64, 32\]")


def test_nan_activations_are_refused_at_harvest(tiny_lm, tmp_path, monkeypatch):
    from saelib.lm import activations

    forward = activations.activation_rows

    def poisoned_forward(*args):
        out = forward(*args)
        out[HOOKS[1]][20, 5] = float("nan")
        return out

    monkeypatch.setattr(activations, "activation_rows", poisoned_forward)
    match = (
        r"blocks.2.hook_resid_post has NaN or inf activations in 1 of 64 rows of shard 0 "
        r"\(first in sequence 1 of tokens, dtype float32\)"
    )
    with pytest.raises(ValueError, match=match):
        harvest(tiny_lm, tmp_path)
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing poisoned was cached


def test_harvesting_no_sequences_is_refused(tiny_lm, tmp_path):
    with pytest.raises(
        ValueError, match=r"tokens must be at least one sequence: .*got 'torch.int64 \[0, 16\]'"
    ):
        harvest(tiny_lm, tmp_path / "c", tokens=torch.zeros(0, 16, dtype=torch.long))
    assert not (tmp_path / "c").exists()


# -- 6: parameters and loaders ----------------------------------------------------------
def test_chapter_parameters_refuse_nan_and_inf_inside_a_range():
    from saelib.parameters import Param, check_parameters

    spec = {"lr": Param(float, low=1e-6, high=1.0), "ks": Param(list, item=float, low=0)}
    for bad in (float("nan"), float("inf")):
        with pytest.raises(
            ValueError, match=r"lr=(nan|inf) is not allowed: expected float in \[1e-06, 1.0\]"
        ):
            check_parameters({"lr": bad, "ks": [1.0]}, spec)
        with pytest.raises(ValueError, match=r"ks=\[1.0, (nan|inf)\] is not allowed"):
            check_parameters({"lr": 1e-3, "ks": [1.0, bad]}, spec)


def test_command_line_values_are_read_as_users_type_them():
    import importlib.util

    from saelib.parameters import parse_value

    typed = ["1e-3", "3", "[2, 6]", "true", "1.0e-3", "-2E+2", ".5", "[1e-3, 1e-2]", "gpt2"]
    expected = [0.001, 3, [2, 6], True, 0.001, -200.0, 0.5, [0.001, 0.01], "gpt2"]
    assert [parse_value(t) for t in typed] == expected
    assert type(parse_value("3")) is int
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("chapters", root / "scripts" / "chapters.py")
    chapters = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chapters)
    assert chapters._overrides([["lr", "1e-3"], ["ks", "[2, 6]"]]) == {"lr": 0.001, "ks": [2, 6]}


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lr=True), "TrainConfig.lr must be a number > 0, got True"),
        (dict(betas=0.9), r"TrainConfig.betas must be two numbers in \[0, 1\), .* got 0.9"),
        (dict(betas=("a", 0.9)), r"TrainConfig.betas must be two numbers"),
        (dict(lr=float("nan")), "TrainConfig.lr must be a number > 0, got nan"),
        (dict(on_nonfinite="ignore"), r"on_nonfinite must be one of \['raise', 'skip'\]"),
    ],
)
def test_train_config_refuses_bad_types_by_name(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(n_steps=3, **kw)


def test_load_sae_on_a_saelens_folder_says_use_load_saelens(tmp_path):
    from saelib.io import load_sae
    from saelib.saelens import save_saelens

    save_saelens(make_sae(SAEConfig(d_in=8, d_sae=16)), tmp_path)
    with pytest.raises(ValueError, match="config.json: file not found .*use .*load_saelens"):
        load_sae(tmp_path)


def test_load_sae_refuses_a_config_without_its_weights_sha256(tmp_path):
    from saelib.io import load_sae, save_sae

    save_sae(make_sae(SAEConfig(d_in=8, d_sae=16)), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["weights_sha256"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'weights_sha256' is None; .* the file was edited"):
        load_sae(tmp_path)


def test_loaders_refuse_nan_weights(tmp_path):
    from saelib.saelens import load_saelens, save_saelens

    save_saelens(make_sae(SAEConfig(d_in=8, d_sae=16)), tmp_path)
    path = tmp_path / "sae_weights.safetensors"
    tensors = load_file(path)
    tensors["W_dec"][3, 1] = float("nan")
    save_file(tensors, path)
    with pytest.raises(
        ValueError, match="sae_weights.safetensors: tensor 'W_dec' has 1 NaN or inf"
    ):
        load_saelens(tmp_path)


def test_jumprelu_zero_thresholds_still_round_trip(tmp_path):
    """-inf is a valid log_threshold (threshold 0): the finiteness check allows it."""
    from saelib.io import load_sae, save_sae

    sae = make_sae(SAEConfig(d_in=8, d_sae=16, architecture="jumprelu"))
    with torch.no_grad():
        sae.log_threshold[0] = -float("inf")
    save_sae(sae, tmp_path)
    assert load_sae(tmp_path).log_threshold[0] == -float("inf")


def test_sae_ito_without_its_solver_argument_names_it():
    from saelib.coding.ito import sae_ito

    sae = make_sae(SAEConfig(d_in=8, d_sae=16))
    with pytest.raises(ValueError, match=r"l0 must be given: sae_ito\(solver='gradient_pursuit'\)"):
        sae_ito(sae, data(4))
    with pytest.raises(ValueError, match=r"l1 must be given: sae_ito\(solver='ista'\) needs it"):
        sae_ito(sae, data(4), solver="ista")
    assert sae_ito(sae, data(4), l0=2).codes.shape == (4, 16)


def test_versions_name_what_a_chapter_ran_with():
    from saelib.parameters import versions

    line = versions()
    assert line.startswith("python 3.") and f"torch {torch.__version__}" in line
    assert versions(("no-such-package-xyz",)).endswith("no-such-package-xyz -")


def test_truncated_shard_is_named_before_and_while_streaming(tmp_path):
    from saelib.data import ShardedBatches, write_shards

    paths = write_shards(data(96), tmp_path, rows_per_shard=32)
    stream = iter(ShardedBatches(paths, batch_size=16))  # no sha256: the format still checks
    next(stream)
    paths[1].write_bytes(paths[1].read_bytes()[:200])
    match = r"shard .*shard_00001.safetensors is not a readable safetensors file"
    with pytest.raises(ValueError, match=match):
        for _ in range(6):
            next(stream)
    with pytest.raises(ValueError, match=match):
        ShardedBatches(paths, batch_size=16)


# -- 8: documented guarantees hold as stated ---------------------------------------------
def test_saelens_threshold_round_trip_matches_its_documented_rates():
    """saelens.py: 85% exact on uniform (0, 1), 69% on (0, 10), the rest a few ulp off."""
    from saelib.saelens import _exact_log

    g = torch.Generator().manual_seed(0)
    for scale, rate in ((1.0, 0.85), (10.0, 0.69)):
        theta = scale * torch.rand(50_000, generator=g)
        back = _exact_log(theta).exp()
        ulp = (back.view(torch.int32) - theta.view(torch.int32)).abs()
        assert abs(float((ulp == 0).float().mean()) - rate) < 0.02
        assert int(ulp.max()) <= 8
    exact = torch.randn(10_000, generator=g).exp()  # thresholds saelib writes: exp of a float
    assert torch.equal(_exact_log(exact).exp(), exact)


def test_matching_pursuit_guarantees_what_its_docstring_says():
    from saelib.coding.pursuit import matching_pursuit

    g = torch.Generator().manual_seed(0)
    D, x = torch.randn(64, 16, generator=g), torch.randn(500, 16, generator=g)
    result = matching_pursuit(D, x, 8, return_history=True)
    nnz = (result.codes != 0).sum(1)
    assert int(nnz.max()) <= 8 and int(nnz.min()) < 8  # at most l0; atoms are picked again
    assert bool((result.history.diff(dim=0) <= 1e-5).all())  # the residual never grows


def test_skipped_batches_survive_a_resume_exactly(tmp_path):
    parts = poisoned(5, float("nan"), batch=2, n=12)

    class InterruptedOnce:
        """The batches, with Ctrl-C before batch 6 the first time through."""

        fired = False

        def __iter__(self):
            for i, batch in enumerate(parts):
                if i == 6 and not self.fired:
                    self.fired = True
                    raise KeyboardInterrupt
                yield batch

    reference = Trainer(make_sae(SAE_CFG), config(on_nonfinite="skip"))
    with pytest.warns(UserWarning, match="skipped this batch"):
        reference.fit(parts)
    ckpt = tmp_path / "c"
    data_ = InterruptedOnce()
    with pytest.warns(UserWarning), pytest.raises(KeyboardInterrupt):
        Trainer(make_sae(SAE_CFG), config(on_nonfinite="skip", checkpoint_dir=str(ckpt))).fit(data_)
    resumed = Trainer.from_checkpoint(ckpt)
    assert (resumed.step, resumed.skipped) == (6, 1)
    resumed.fit(data_)
    assert resumed.skipped == 1
    assert_same_weights(resumed.sae, reference.sae.state_dict())
