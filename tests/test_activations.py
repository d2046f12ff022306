"""Harvesting to a sharded cache: contents, manifest, resume, corruption, streaming."""

import json

import pytest
import torch

from saelib.data import ShardedBatches
from saelib.lm import activations as acts
from saelib.lm.model import resid_hook

HOOKS = [resid_hook(0), resid_hook(2)]


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 64, (10, 16), generator=torch.Generator().manual_seed(0))


def harvest(tiny_lm, tokens, directory, **kwargs):
    model, _ = tiny_lm
    settings = dict(corpus_sha256="abc", batch_size=3, rows_per_shard=64, progress=False)
    return acts.harvest(model, tokens, HOOKS, directory, **(settings | kwargs))


def test_cache_holds_the_residual_stream(tiny_lm, tokens, tmp_path):
    model, hf = tiny_lm
    cache = harvest(tiny_lm, tokens, tmp_path / "c")
    assert cache.n_tokens == 160 and len(cache.paths(HOOKS[0])) == 3  # 4 + 4 + 2 sequences
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states  # embeddings first
    x = cache.load(HOOKS[0])  # [160, 32], sequence-major token order
    torch.testing.assert_close(x, hidden[1].reshape(-1, 32), rtol=0, atol=0)
    deep = cache.load(HOOKS[1])
    direct = acts.harvest(
        model, tokens, [HOOKS[1]], tmp_path / "d", corpus_sha256="abc", progress=False
    ).load(HOOKS[1])
    torch.testing.assert_close(deep, direct, rtol=0, atol=0)  # one pass = separate passes
    assert cache.load(HOOKS[0], max_rows=20).shape == (20, 32)
    torch.testing.assert_close(cache.load(HOOKS[0], max_rows=20, from_end=True), x[-20:])


def test_manifest(tiny_lm, tokens, tmp_path):
    cache = harvest(tiny_lm, tokens, tmp_path, dtype="float16", skip_first=1)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m == cache.manifest
    assert m["model"] == "tiny-llama" and m["hooks"] == HOOKS and m["corpus_sha256"] == "abc"
    assert (m["dtype"], m["d_model"], m["complete"]) == ("float16", 32, True)
    assert m["n_tokens"] == 10 * 15 and m["seqs_per_shard"] == 64 // 15
    for hook in HOOKS:
        assert sum(s["rows"] for s in m["shards"][hook]) == 150
        assert all(len(s["sha256"]) == 64 for s in m["shards"][hook])
    batch = next(iter(cache.batches(HOOKS[0], batch_size=8)))
    assert batch.dtype == torch.float32 and batch.shape == (8, 32)


def test_site_is_measured_on_the_cache(tiny_lm, tokens, tmp_path):
    cache = harvest(tiny_lm, tokens, tmp_path, skip_first=1)
    site = cache.site(HOOKS[1], max_rows=40)
    x = cache.load(HOOKS[1], max_rows=40)
    assert (site.model, site.hook, site.skip_first, site.max_norm) == (
        "tiny-llama",
        HOOKS[1],
        1,
        None,
    )
    assert site.prepare(x).pow(2).sum(-1).mean().item() == pytest.approx(32, rel=1e-5)
    limited = cache.site(HOOKS[1], max_rows=40, outlier_ratio=1.0)  # the median norm
    assert limited.max_norm == pytest.approx(x.double().norm(dim=-1).median().item())
    inliers = x[x.norm(dim=-1) <= limited.max_norm]
    assert limited.prepare(inliers).pow(2).sum(-1).mean().item() == pytest.approx(32, rel=1e-5)


def test_complete_cache_is_reused_without_a_forward(tiny_lm, tokens, tmp_path, monkeypatch):
    first = harvest(tiny_lm, tokens, tmp_path)
    monkeypatch.setattr(acts, "activation_rows", _fail)
    again = harvest(tiny_lm, tokens, tmp_path)
    assert again.manifest == first.manifest


def _fail(*args, **kwargs):
    raise AssertionError("the model was run again")


def test_interrupted_harvest_resumes_to_the_same_cache(tiny_lm, tokens, tmp_path, monkeypatch):
    whole = harvest(tiny_lm, tokens, tmp_path / "whole")
    calls, real = [], acts.activation_rows

    def forward_then_interrupt(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(acts, "activation_rows", forward_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        harvest(tiny_lm, tokens, tmp_path / "part")
    partial = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert not partial["complete"] and len(partial["shards"][HOOKS[0]]) == 2
    with pytest.raises(ValueError, match="is incomplete .* to resume it"):
        acts.open_cache(tmp_path / "part")
    calls.clear()
    monkeypatch.setattr(acts, "activation_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed = harvest(tiny_lm, tokens, tmp_path / "part")
    assert len(calls) == 1  # only the missing third shard was computed
    assert resumed.manifest["shards"] == whole.manifest["shards"]  # same files, same sha256
    assert resumed.manifest["n_tokens"] == whole.manifest["n_tokens"]


def test_default_directory_is_keyed_by_settings(tiny_lm, tokens, tmp_path, monkeypatch):
    monkeypatch.setenv("SAELIB_CACHE", str(tmp_path))
    a = harvest(tiny_lm, tokens, None)
    b = harvest(tiny_lm, tokens, None, rows_per_shard=32)
    c = harvest(tiny_lm, tokens, None)
    assert a.directory != b.directory and a.directory == c.directory
    assert a.directory.parent == tmp_path / "activations"


def test_mismatched_cache_is_refused(tiny_lm, tokens, tmp_path):
    harvest(tiny_lm, tokens, tmp_path)
    with pytest.raises(ValueError, match="corpus_sha256: cached 'abc', wanted 'xyz'"):
        harvest(tiny_lm, tokens, tmp_path, corpus_sha256="xyz")
    with pytest.raises(ValueError, match="other settings .*dtype"):
        harvest(tiny_lm, tokens, tmp_path, dtype="bfloat16")


def test_corrupted_or_missing_shard_is_detected(tiny_lm, tokens, tmp_path):
    cache = harvest(tiny_lm, tokens, tmp_path)
    path = cache.paths(HOOKS[1])[1]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of one activation
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard_00001.safetensors does not match its sha256"):
        acts.open_cache(tmp_path)
    with pytest.raises(ValueError, match="corrupted"):
        harvest(tiny_lm, tokens, tmp_path)  # a harvest does not reuse it either
    acts.open_cache(tmp_path, verify=False)  # explicitly unhashed opening still works
    path.unlink()
    for verify in (True, False):  # a missing shard is a count check: no hashing needed
        with pytest.raises(ValueError, match="shard_00001.safetensors of .* is missing"):
            acts.open_cache(tmp_path, verify=verify)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        acts.open_cache(tmp_path)


def test_streaming_visits_every_row_once_per_pass(tiny_lm, tokens, tmp_path):
    cache = harvest(tiny_lm, tokens, tmp_path)
    data = cache.batches(HOOKS[0], batch_size=16, seed=3)
    assert isinstance(data, ShardedBatches) and data.per_pass == 10  # 64/16 * 2 + 32/16
    stream = iter(data)
    seen = torch.cat([next(stream) for _ in range(data.per_pass)])
    full = cache.load(HOOKS[0])
    key = lambda x: sorted(map(tuple, x.tolist()))  # noqa: E731
    assert key(seen) == key(full)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hooks=["blocks.9.hook_resid_post"]), "hook must be a hook of tiny-llama"),
        (dict(hooks=["ln_final.hook_out"]), "hook must be a block hook name"),
        (dict(hooks=[]), "hooks must be a non-empty list"),
        (dict(dtype="int8"), r"dtype must be one of \['float32', 'float16', 'bfloat16'\]"),
        (dict(skip_first=16), r"skip_first must be an integer in \[0, 15\], got 16"),
        (dict(rows_per_shard=8), r"rows_per_shard must be an integer >= .* \(16\)"),
        (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
        (dict(tokens=torch.zeros(4, 16)), "tokens must be a long tensor"),
    ],
)
def test_bad_input(tiny_lm, tokens, tmp_path, kwargs, match):
    model, _ = tiny_lm
    args = dict(tokens=tokens, hooks=HOOKS, corpus_sha256="abc", progress=False) | kwargs
    with pytest.raises(ValueError, match=match):
        acts.harvest(model, directory=tmp_path, **args)
