"""Batches of activations for the trainer: from a tensor in memory or from shards on disk.

Both sources are deterministic given a seed and can start at any step (``iter_from``),
so an interrupted training run resumes on exactly the batches it would have seen.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from saelib.files import sha256_file
from saelib.validation import check_int


def _check_batch_size(batch_size: int, n_rows: int) -> None:
    check_int("batch_size", batch_size, low=1, high=n_rows)  # at most the rows it draws from


class TensorBatches:
    """Endless shuffled batches ``[batch_size, d_in]`` from ``x [n, d_in]`` held in memory.

    Epoch ``e`` uses the permutation drawn from ``seed + e``; a final partial batch is
    dropped so every batch has the same size. ``x`` must be floating point and finite
    (checked once here, naming the first bad row, rather than as NaN losses later).
    """

    def __init__(self, x: Tensor, batch_size: int, seed: int = 0, shuffle: bool = True):
        if x.dim() != 2:
            raise ValueError(f"x must have shape [n, d_in], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point (e.g. x.float()), got dtype {x.dtype}")
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
        if len(bad):
            raise ValueError(
                f"x must be finite, got NaN or inf in {len(bad)} rows (first: row "
                f"{int(bad[0])}); drop them with x[torch.isfinite(x).all(dim=1)]"
            )
        _check_batch_size(batch_size, x.shape[0])
        self.x, self.batch_size, self.seed, self.shuffle = x, batch_size, seed, shuffle
        self.per_epoch = x.shape[0] // batch_size

    def __iter__(self) -> Iterator[Tensor]:
        return self.iter_from(0)

    def iter_from(self, step: int) -> Iterator[Tensor]:
        epoch, offset = divmod(step, self.per_epoch)
        while True:
            order = self._order(epoch)
            for i in range(offset, self.per_epoch):
                yield self.x[order[i * self.batch_size : (i + 1) * self.batch_size]]
            epoch, offset = epoch + 1, 0

    def _order(self, epoch: int) -> Tensor:
        n = self.x.shape[0]
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(n, generator=g)


def write_shards(x: Tensor, directory: str | Path, rows_per_shard: int) -> list[Path]:
    """Write ``x [n, d_in]`` as safetensors shards ``shard_00000.safetensors``, ... ."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, start in enumerate(range(0, x.shape[0], rows_per_shard)):
        path = directory / f"shard_{i:05d}.safetensors"
        save_file({"activations": x[start : start + rows_per_shard].contiguous()}, path)
        paths.append(path)
    return paths


def read_shard(path: Path, key: str, sha256: str | None = None) -> Tensor:
    """Tensor ``key`` of the safetensors shard at ``path``, checked against ``sha256``.

    The file is hashed just before it is read, so a shard changed after its cache was
    opened is still caught. Hashing costs about as much again as reading a shard from the
    page cache (+78%), about 1% of training on it (``benchmarks/results/fault_checks.md``).
    Raises ValueError naming the shard.
    """
    if sha256 is not None and sha256_file(path) != sha256:
        raise ValueError(
            f"shard {path} does not match its sha256: it changed after it was written "
            f"(a flipped bit, a truncated copy); delete its cache folder to harvest again"
        )
    try:
        with safe_open(path, framework="pt") as f:
            return f.get_tensor(key)
    except SafetensorError as err:
        raise ValueError(f"shard {path} is not a readable safetensors file ({err})") from None


class ShardedBatches:
    """Endless batches streamed from safetensors shards, one shard in memory at a time.

    Each pass visits the shards in order and shuffles rows within a shard (seeded by
    ``seed``, pass and shard), so memory stays at one shard whatever the dataset size.
    A shard's last partial batch is dropped; a shard smaller than ``batch_size`` gives no
    batch. ``dtype`` converts the rows (e.g. float16 shards to float32 batches). With
    ``sha256`` (one hex digest per path), every shard is verified each time it is read,
    and a shard whose row count changed since the start raises too.
    """

    def __init__(
        self,
        paths: Iterable[str | Path],
        batch_size: int,
        seed: int = 0,
        key: str = "activations",
        dtype: torch.dtype | None = None,
        sha256: Iterable[str] | None = None,
    ):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("paths must name at least one shard, got none")
        self.sha256 = list(sha256) if sha256 is not None else [None] * len(self.paths)
        if len(self.sha256) != len(self.paths):
            raise ValueError(
                f"sha256 must give one digest per shard ({len(self.paths)}), got {len(self.sha256)}"
            )
        self.key, self.seed, self.dtype = key, seed, dtype
        self.rows = [self._n_rows(p) for p in self.paths]
        _check_batch_size(batch_size, max(self.rows))
        self.batch_size = batch_size
        self.per_shard = [r // batch_size for r in self.rows]
        self.per_pass = sum(self.per_shard)

    def _n_rows(self, path: Path) -> int:
        try:
            with safe_open(path, framework="pt") as f:
                if self.key not in f.keys():
                    raise ValueError(f"shard {path} has no tensor named {self.key!r} (key)")
                return f.get_slice(self.key).get_shape()[0]
        except SafetensorError as err:
            raise ValueError(f"shard {path} is not a readable safetensors file ({err})") from None

    def __iter__(self) -> Iterator[Tensor]:
        return self.iter_from(0)

    def iter_from(self, step: int) -> Iterator[Tensor]:
        n_pass, offset = divmod(step, self.per_pass)
        for p in itertools.count(n_pass):
            for s, path in enumerate(self.paths):
                if offset >= self.per_shard[s]:
                    offset -= self.per_shard[s]
                    continue
                x = read_shard(path, self.key, self.sha256[s])
                if x.shape[0] != self.rows[s]:
                    raise ValueError(
                        f"shard {path} has {x.shape[0]} rows, {self.rows[s]} when streaming "
                        f"began: it was replaced; start again on the new shards"
                    )
                if self.dtype is not None:
                    x = x.to(self.dtype)
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + p * 10_007 + s)
                order = torch.randperm(x.shape[0], generator=g)
                for i in range(offset, self.per_shard[s]):
                    yield x[order[i * self.batch_size : (i + 1) * self.batch_size]]
                offset = 0


def batches_from_step(batches: Iterable[Tensor], step: int) -> Iterator[Tensor]:
    """The batches of ``batches`` from batch ``step`` on (0-based): how a resumed run
    finds the batches the interrupted one would have seen next.

    A source with ``iter_from`` (``TensorBatches``, ``ShardedBatches``) restarts there;
    any other iterable is iterated from its start (a list, a new generator) and its first
    ``step`` batches skipped. An iterator already in use cannot be rewound: skipping from
    where it stands matches only if it is new, so that case warns.
    """
    if hasattr(batches, "iter_from"):
        return batches.iter_from(step)
    if step > 0 and iter(batches) is batches:
        warnings.warn(
            f"resuming at step {step} from an iterator without iter_from: skipping {step} "
            f"batches from its current position, which matches the interrupted run only if "
            f"the iterator is new; prefer TensorBatches or ShardedBatches",
            stacklevel=3,
        )
    return itertools.islice(iter(batches), step, None)
