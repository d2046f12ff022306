"""Harvest sharded over 2 gloo processes into one cache, against a single-process harvest
on the same tiny random Llama (tests/conftest.py): same files, manifest, resume, checks."""

import json

import pytest
import torch

from saelib.distributed import run_local
from saelib.lm import activations as acts
from saelib.lm.model import resid_hook

pytestmark = pytest.mark.distributed

HOOKS = [resid_hook(0), resid_hook(2)]
SETTINGS = dict(corpus_sha256="abc", batch_size=3, rows_per_shard=64, progress=False)


def _tokens():  # 10 sequences, 4 per shard: shards 0 and 1 in round 0, shard 2 in round 1
    return torch.randint(0, 64, (10, 16), generator=torch.Generator().manual_seed(0))


def _harvest_rank(rank, directory, model_dir, fail_on_shard):
    from conftest import build_tiny_lm

    torch.set_num_threads(1)
    model, _ = build_tiny_lm(f"{model_dir}/tok{rank}")
    real, calls = acts.activation_rows, []

    def forward(lm, chunk, *args):
        calls.append(1)
        if fail_on_shard is not None and torch.equal(chunk, _tokens()[4 * fail_on_shard :][:4]):
            raise RuntimeError(f"shard {fail_on_shard} failed on purpose")
        return real(lm, chunk, *args)

    acts.activation_rows = forward
    cache = acts.harvest(model, _tokens(), HOOKS, directory, sharded=True, **SETTINGS)
    return cache.manifest, len(calls)


def test_sharded_harvest_equals_one_process_and_resumes(tiny_lm, tmp_path):
    model, _ = tiny_lm
    single = acts.harvest(model, _tokens(), HOOKS, tmp_path / "single", **SETTINGS)
    part = str(tmp_path / "part")
    # rank 0 fails on shard 2 (round 1): the run stops, naming it; round 0 is kept
    with pytest.raises(RuntimeError, match=r"(?s)rank 0 failed.*shard 2 failed on purpose"):
        run_local(_harvest_rank, 2, (part, str(tmp_path), 2), timeout_s=240)
    partial = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert not partial["complete"] and len(partial["shards"][HOOKS[0]]) == 2
    with pytest.raises(ValueError, match="is incomplete"):
        acts.open_cache(part)
    # resumed by 2 ranks: only shard 2 is computed (by rank 0); shards 0 and 1 came from
    # ranks 0 and 1 in the failed run
    resumed = run_local(_harvest_rank, 2, (part, str(tmp_path), None), timeout_s=240)
    assert [calls for _, calls in resumed] == [1, 0]
    for manifest, _ in resumed:
        assert manifest == single.manifest  # same files, rows, sha256 and counts
    cache = acts.open_cache(part)  # counts and every sha256 verified
    for hook in HOOKS:
        torch.testing.assert_close(cache.load(hook), single.load(hook), rtol=0, atol=0)
    # a damaged shard of the sharded cache is caught like any other
    shard = tmp_path / "part" / single.manifest["shards"][HOOKS[1]][1]["file"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its sha256"):
        acts.open_cache(part)
