"""Harvest a language model's activations to a sharded on-disk cache, and stream them back.

    cache = harvest(lm, corpus.tokens, [resid_hook(3), resid_hook(9)], directory,
                    corpus_sha256=corpus.sha256)
    batches = cache.batches(resid_hook(3), batch_size=4096)    # for Trainer.fit
    x_eval = cache.load(resid_hook(9), max_rows=16_384)         # [n, d_model] in memory
    rows = activation_rows(lm, tokens, hooks)   # {hook: [n * n_ctx, d_model]}, no cache

One forward pass serves every hook and stops after the deepest requested block
(``stop_at_layer``), so a shallow hook costs a fraction of a full forward. Residual-stream
hooks are read from the model's own forward, cut after that block (``saelib.lm.residual``:
the bridge's numbers without its hook overhead); other hooks go through the bridge. Layout::

    directory/manifest.json                          model, hooks, corpus sha256, dtype, shards
    directory/blocks.3.hook_resid_post/shard_00000.safetensors   {"activations": [rows, d_model]}

Shard ``i`` of every hook holds the same sequences, rows in token order (sequence-major).
The manifest is rewritten after each shard, so an interrupted harvest resumes at the
first missing shard. Opening a cache checks the settings, the manifest's counts against
the shards (rows, token count, shape, dtype) and every shard's sha256; streaming and
loading verify each shard's sha256 again as they read it (about 1% of a training pass:
``benchmarks/results/fault_checks.md``). A mismatched, inconsistent or corrupted cache raises
``ValueError`` instead of being used, and so do NaN or inf activations at harvest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from saelib import distributed as _dist
from saelib.data import ShardedBatches, read_shard
from saelib.files import atomic_path, sha256_bytes, sha256_file, write_text_atomic
from saelib.lm.model import LanguageModel, hook_layer
from saelib.lm.residual import residual_activations
from saelib.lm.site import Site
from saelib.lm.sources import cache_dir
from saelib.progress import progress_bar
from saelib.validation import check_choice, check_int, is_int, require

_FORMAT = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# settings that must match for a cache to be reused or resumed
_KEY_FIELDS = ("format", "model", "hooks", "corpus_sha256", "n_seq", "n_ctx", "skip_first")
_KEY_FIELDS += ("dtype", "d_model", "seqs_per_shard")


def default_directory(model: str, hooks: list[str], corpus_sha256: str, **settings) -> Path:
    """``<cache>/activations/<key>``: one folder per (model, hooks, corpus, settings)."""
    key = json.dumps([model, sorted(hooks), corpus_sha256, settings], sort_keys=True)
    return cache_dir() / "activations" / sha256_bytes(key)[:16]


@dataclass
class ActivationCache:
    """A complete, verified activation cache (see :func:`open_cache`)."""

    directory: Path
    manifest: dict

    @property
    def hooks(self) -> list[str]:
        return self.manifest["hooks"]

    @property
    def n_tokens(self) -> int:
        return self.manifest["n_tokens"]

    def paths(self, hook: str) -> list[Path]:
        """Shard files of ``hook``, in order."""
        check_choice("hook", hook, self.hooks)
        return [self.directory / s["file"] for s in self.manifest["shards"][hook]]

    def sha256(self, hook: str) -> list[str]:
        """The manifest's sha256 of each shard of ``hook``, in order."""
        check_choice("hook", hook, self.hooks)
        return [s["sha256"] for s in self.manifest["shards"][hook]]

    def batches(
        self, hook: str, batch_size: int, seed: int = 0, verify: bool = True
    ) -> ShardedBatches:
        """Endless float32 batches ``[batch_size, d_model]``, one shard in memory at a time.

        With ``verify`` each shard is checked against its sha256 every time it is read,
        so a shard damaged after opening raises, naming it, instead of being trained on.
        """
        sums = self.sha256(hook) if verify else None
        return ShardedBatches(
            self.paths(hook), batch_size, seed=seed, dtype=torch.float32, sha256=sums
        )

    def load(self, hook: str, max_rows: int | None = None, from_end: bool = False) -> Tensor:
        """Rows of ``hook`` as float32 ``[n, d_model]`` in memory: the first (last) ``max_rows``."""
        shards = list(zip(self.paths(hook), self.sha256(hook), strict=True))
        parts, total = [], 0
        for path, sha256 in shards[::-1] if from_end else shards:
            if max_rows is not None and total >= max_rows:
                break
            x = read_shard(path, "activations", sha256).float()  # verified as it is read
            parts.append(x)
            total += x.shape[0]
        x = torch.cat(parts[::-1] if from_end else parts)
        if max_rows is None:
            return x
        return x[-max_rows:] if from_end else x[:max_rows]

    def site(self, hook: str, max_rows: int = 8192, outlier_ratio: float | None = None) -> Site:
        """The :class:`~saelib.lm.site.Site` of ``hook`` measured on its first ``max_rows`` rows.

        The model and ``skip_first`` are the cache's; the scale (and, with
        ``outlier_ratio``, the norm limit) come from ``Site.measure``.
        """
        x = self.load(hook, max_rows=max_rows)
        skip = self.manifest["skip_first"]
        return Site.measure(
            self.manifest["model"], hook, x, skip_first=skip, outlier_ratio=outlier_ratio
        )


def harvest(
    lm: LanguageModel,
    tokens: Tensor,
    hooks: list[str],
    directory: str | Path | None = None,
    *,
    corpus_sha256: str,
    batch_size: int = 8,
    rows_per_shard: int = 65_536,
    dtype: str = "float32",
    skip_first: int = 0,
    progress: bool = True,
    sharded: bool = False,
) -> ActivationCache:
    """Run ``lm`` over ``tokens [n_seq, n_ctx]`` and cache the activations at ``hooks``.

    ``batch_size`` sequences go through the model at a time; ``rows_per_shard`` tokens
    (rounded down to whole sequences) go into one shard; ``skip_first`` positions of each
    sequence are left out (e.g. a BOS or attention-sink token). A complete cache with the
    same settings is returned as is; a partial one is resumed; one made with other
    settings raises ``ValueError``. ``directory`` defaults to :func:`default_directory`.

    ``sharded``: every rank of the running torch.distributed group (torchrun) calls this
    with the same arguments and a directory they all see; in each round of N shards, rank
    ``r`` computes shard ``round * N + r`` and writes its files, then rank 0 appends the
    round's entries (gathered from every rank) to the one manifest. The cache is the one a
    single process writes, file for file; an interrupted harvest resumes at the first
    round not in the manifest, with any number of ranks.
    """
    manifest = _new_manifest(lm, tokens, hooks, corpus_sha256, rows_per_shard, dtype, skip_first)
    check_int("batch_size", batch_size, low=1)
    if directory is None:
        keys = ("n_seq", "n_ctx", "dtype", "skip_first", "seqs_per_shard")
        settings = {k: manifest[k] for k in keys}
        directory = default_directory(lm.name, hooks, corpus_sha256, **settings)
    directory = Path(directory)
    path = directory / "manifest.json"
    n_ranks, rank = (_dist.world_size(), _dist.rank()) if sharded else (1, 0)
    if path.is_file():
        manifest = _check_existing(directory, manifest)
        if manifest["complete"]:
            return ActivationCache(directory, manifest)
    if rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        for hook in hooks:
            (directory / hook).mkdir(exist_ok=True)
        _write_manifest(path, manifest)
    if sharded:
        torch.distributed.barrier()

    per, n_seq = manifest["seqs_per_shard"], manifest["n_seq"]
    n_shards = -(-n_seq // per)
    done = len(manifest["shards"][hooks[0]])
    bar = progress_bar(
        progress and rank == 0, total=n_seq, initial=done * per, desc="harvest", unit="seq"
    )
    try:
        for start in range(done, n_shards, n_ranks):
            i, entries = start + rank, None
            if i < n_shards:
                chunk = tokens[i * per : (i + 1) * per]
                acts = activation_rows(lm, chunk, hooks, batch_size, skip_first, DTYPES[dtype], bar)
                for hook in hooks:
                    _check_finite(acts[hook], hook, i, manifest)
                entries = {hook: _write_shard(directory, hook, i, acts[hook]) for hook in hooks}
            gathered = [entries]
            if sharded:  # every rank's entries, in rank order: shard order
                gathered = [None] * n_ranks
                torch.distributed.all_gather_object(gathered, entries)
            for found in filter(None, gathered):
                for hook in hooks:
                    manifest["shards"][hook].append(found[hook])
                manifest["n_tokens"] += found[hooks[0]]["rows"]
            manifest["complete"] = start + n_ranks >= n_shards
            if rank == 0:  # after the shards: it never names a missing one
                _write_manifest(path, manifest)
        if sharded:
            torch.distributed.barrier()  # the manifest is complete when any rank returns
    finally:
        bar.close()
    return ActivationCache(directory, manifest)


@torch.no_grad()
def activation_rows(
    lm: LanguageModel,
    tokens: Tensor,
    hooks: list[str],
    batch_size: int = 32,
    skip_first: int = 0,
    dtype: torch.dtype = torch.float32,
    bar=None,
) -> dict[str, Tensor]:
    """Activations ``{hook: [n * (n_ctx - skip_first), d_model]}`` of ``tokens [n, n_ctx]``
    in token order, on the CPU in ``dtype``, ``batch_size`` sequences per forward
    (:func:`saelib.lm.residual.residual_activations`); ``bar`` advances by sequences."""
    out = {hook: [] for hook in hooks}
    for seqs in tokens.split(batch_size):
        cache = residual_activations(lm, seqs.to(lm.device), hooks)
        for hook in hooks:
            act = cache[hook][:, skip_first:]  # [batch, n_ctx - skip_first, d_model]
            out[hook].append(act.reshape(-1, act.shape[-1]).to("cpu", dtype))
        if bar is not None:
            bar.update(seqs.shape[0])
    return {hook: torch.cat(parts) for hook, parts in out.items()}


def _check_finite(x: Tensor, hook: str, shard: int, manifest: dict) -> None:
    """Refuse NaN or inf activations before they are cached, naming the sequence."""
    bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
    if not len(bad):
        return
    per_seq = manifest["n_ctx"] - manifest["skip_first"]
    seq = shard * manifest["seqs_per_shard"] + int(bad[0]) // per_seq
    dtype = manifest["dtype"]
    hint = (
        "float16 overflows beyond 65504: harvest with dtype='float32' or 'bfloat16'"
        if dtype == "float16"
        else "the model produced them: check the model and that sequence's tokens"
    )
    raise ValueError(
        f"{hook} has NaN or inf activations in {len(bad)} of {x.shape[0]} rows of shard "
        f"{shard} (first in sequence {seq} of tokens, dtype {dtype}); {hint}"
    )


def _write_manifest(path: Path, manifest: dict) -> None:
    write_text_atomic(path, json.dumps(manifest, indent=1))  # the old one or the new one


def _write_shard(directory: Path, hook: str, i: int, x: Tensor) -> dict:
    """Write shard ``i`` of ``hook``; returns its manifest entry (file, rows, sha256)."""
    name = f"{hook}/shard_{i:05d}.safetensors"
    with atomic_path(directory / name) as tmp:
        save_file({"activations": x.contiguous()}, tmp)
    return {"file": name, "rows": x.shape[0], "sha256": sha256_file(directory / name)}


def _new_manifest(lm, tokens, hooks, corpus_sha256, rows_per_shard, dtype, skip_first) -> dict:
    ok = tokens.dim() == 2 and tokens.dtype == torch.long
    shown = f"{tokens.dtype} {list(tokens.shape)}"
    require(ok, "tokens", shown, "a long tensor [n_seq, n_ctx]")
    ok = bool(hooks) and len(set(hooks)) == len(hooks)
    require(ok, "hooks", hooks, "a non-empty list of distinct hook names")
    for hook in hooks:
        hook_layer(hook)  # a block hook: the forward can stop after its block
        require(hook in lm.bridge.hook_dict, "hook", hook, f"a hook of {lm.name}")
    check_choice("dtype", dtype, list(DTYPES))
    n_seq, n_ctx = tokens.shape
    require(n_seq >= 1, "tokens", shown, "at least one sequence: a harvest of none is empty")
    check_int("skip_first", skip_first, low=0, high=n_ctx - 1)
    per_seq = n_ctx - skip_first
    ok = is_int(rows_per_shard) and rows_per_shard >= per_seq
    require(
        ok, "rows_per_shard", rows_per_shard, f"an integer >= the rows of one sequence ({per_seq})"
    )
    return {
        "format": _FORMAT,
        "model": lm.name,
        "hooks": list(hooks),
        "corpus_sha256": corpus_sha256,
        "n_seq": n_seq,
        "n_ctx": n_ctx,
        "skip_first": skip_first,
        "dtype": dtype,
        "d_model": lm.d_model,
        "seqs_per_shard": rows_per_shard // per_seq,
        "n_tokens": 0,
        "complete": False,
        "shards": {hook: [] for hook in hooks},
    }


def _check_existing(directory: Path, wanted: dict) -> dict:
    """The manifest in ``directory`` if it was made with ``wanted``'s settings, shards verified."""
    found = _read_manifest(directory)
    changed = [k for k in _KEY_FIELDS if found.get(k) != wanted[k]]
    if changed:
        detail = ", ".join(f"{k}: cached {found.get(k)!r}, wanted {wanted[k]!r}" for k in changed)
        raise ValueError(
            f"activation cache {directory} was made with other settings ({detail}); "
            f"use another directory or delete this one"
        )
    _verify_shards(directory, found)
    return found


def _read_manifest(directory: Path) -> dict:
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{directory} is not an activation cache: no manifest.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"activation cache manifest {path} is not valid JSON: {err}") from None


def _check_counts(directory: Path, manifest: dict) -> None:
    """The manifest's shard count, rows, token count, shapes and dtype agree with the shards.

    Reads only the shards' headers. Raises ValueError naming the disagreement.
    """

    def fail(what: str) -> None:
        raise ValueError(
            f"activation cache {directory} is corrupted: {what}; delete the folder to harvest again"
        )

    counts = {len(v) for v in manifest["shards"].values()}
    if len(counts) != 1:
        fail("hooks have unequal shards")
    per, n_seq = manifest["seqs_per_shard"], manifest["n_seq"]
    per_seq = manifest["n_ctx"] - manifest["skip_first"]
    n_shards = -(-n_seq // per)
    if manifest.get("complete") and counts != {n_shards}:
        fail(f"the manifest lists {counts.pop()} shards per hook, {n_shards} expected")
    for hook, shards in manifest["shards"].items():
        for i, shard in enumerate(shards):
            path = directory / shard["file"]
            if not path.is_file():
                fail(f"shard {shard['file']} of {hook} is missing")
            expected = min(per, n_seq - i * per) * per_seq
            try:
                with safe_open(path, framework="pt") as f:
                    sl = f.get_slice("activations")
                    shape, dtype = sl.get_shape(), sl.get_dtype()
            except (SafetensorError, KeyError) as err:
                fail(f"shard {shard['file']} is not a readable activation shard ({err})")
            want_dtype = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[manifest["dtype"]]
            if shard["rows"] != expected or shape != [expected, manifest["d_model"]]:
                fail(
                    f"shard {shard['file']} holds {shape} (manifest: {shard['rows']} rows), "
                    f"expected [{expected}, {manifest['d_model']}]"
                )
            if dtype != want_dtype:
                fail(f"shard {shard['file']} has dtype {dtype}, manifest says {manifest['dtype']}")
        total = sum(s["rows"] for s in shards)
        if total != manifest["n_tokens"]:
            fail(
                f"the manifest's n_tokens is {manifest['n_tokens']}, its {hook} shards hold {total}"
            )


def _verify_shards(directory: Path, manifest: dict) -> None:
    _check_counts(directory, manifest)
    for shards in manifest["shards"].values():
        for shard in shards:
            path = directory / shard["file"]
            if sha256_file(path) != shard["sha256"]:
                raise ValueError(
                    f"activation cache {directory} is corrupted: shard {shard['file']} does "
                    f"not match its sha256 in the manifest; delete the folder to harvest again"
                )


def open_cache(directory: str | Path, verify: bool = True) -> ActivationCache:
    """Open a complete cache; the manifest's counts are checked against the shards'
    headers, and with ``verify`` every shard's sha256 too (streaming checks them again)."""
    directory = Path(directory)
    manifest = _read_manifest(directory)
    if not manifest.get("complete"):
        raise ValueError(
            f"activation cache {directory} is incomplete (an interrupted harvest); "
            f"run harvest() with the same settings to resume it"
        )
    if verify:
        _verify_shards(directory, manifest)
    else:
        _check_counts(directory, manifest)
    return ActivationCache(directory, manifest)
