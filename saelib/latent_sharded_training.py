"""Training a latent-sharded TopK SAE: the Trainer's loop, each rank stepping its block.

    init_from_env("cpu")                                          # under torchrun
    trainer = LatentShardedTrainer(make_sae(sae_cfg), train_cfg)  # an untied topk SAE
    trainer.fit(TensorBatches(x, batch_size=4096, seed=0))        # the same source everywhere
    sae = trainer.sae.gather_sae()                                # one ordinary TopKSAE
    sae = load_sharded_sae(train_cfg.checkpoint_dir)              # or, later, from the files

Every rank sees the whole batch and holds a block of the latents
(``saelib.latent_sharded.LatentShardedTopK``). Its forward and backward already give each
rank the gradient of the one loss for its block, and the same gradient of the replicated
``b_dec``. So a step is the ``Trainer``'s own ``train_step``:

- Adam on each rank's block (Adam is element-wise, so each block moves as that block of
  the unsharded SAE would) and on ``b_dec``, whose gradient is also averaged over ranks
  (``d_in`` numbers; equal anyway) so it stays replicated whatever the backend rounds;
- the decoder's gradient projection and row renormalisation, row by row, in each block;
- dead latents per block: ``tokens_since_fired [hi - lo]`` (every rank sees every row, so
  a latent's firing needs no reduction); aux-k chooses the ``k_aux`` largest dead
  pre-activations across ranks, like the main top-k; logged L0 and dead fraction are
  summed over the blocks; a non-finite step is decided by all ranks together.

Checkpoints: each rank writes its block, optimizer state and counters to
``<checkpoint_dir>/shard-<rank>-of-<world size>`` (the Trainer's files, atomic, with the
previous one kept as ``.old``); then all ranks wait for each other. Resuming needs the same
number of ranks; they agree on the newest step that every rank has intact (a crash during a
save leaves some ranks one checkpoint ahead; they go back to their ``.old``). As in
``DataParallelTrainer``, Ctrl-C saves nothing: the run resumes from its last periodic
checkpoint. ``load_sharded_sae`` reads such a checkpoint in one process, without torchrun.

Not supported (refused with an error): ``orthogonality_coeff > 0`` (each atom's nearest
neighbour is searched over every rank's decoder rows), and other architectures than TopK.
Limits: every rank builds the whole SAE before keeping its block, so it must fit in host
memory once per process at the start; ``sparse_topk`` is ignored (codes are dense within
a block); latent sharding is not combined with data parallelism here.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from saelib import distributed
from saelib.checkpoint import META_FILE, DamagedCheckpoint, candidates, read_checkpoint
from saelib.io import read_json
from saelib.latent_sharded import LATENT_DIMS, LatentShardedTopK, assemble
from saelib.saes import SAEConfig
from saelib.saes.topk import TopKSAE
from saelib.training import TrainConfig, Trainer

__all__ = ["LatentShardedTrainer", "load_sharded_sae", "shard_dir"]

_SHARD = re.compile(r"shard-(\d+)-of-(\d+)")


def shard_dir(directory: str | Path, rank: int, world_size: int) -> Path:
    """Rank ``rank``'s checkpoint folder in ``directory``: ``shard-<rank>-of-<world_size>``."""
    return Path(directory) / f"shard-{rank}-of-{world_size}"


class LatentShardedTrainer(Trainer):
    """``Trainer`` of the ranks' blocks of ``sae`` (an untied TopK SAE; see the module).

    Every rank passes the same SAE (built from the same config and seed: checked) and
    keeps its block of it, ``self.sae`` (a ``LatentShardedTopK``); ``sae`` itself is not
    trained. ``group``: the ranks sharing the latents (default: all).
    """

    save_on_interrupt = False

    def __init__(self, sae: TopKSAE, cfg: TrainConfig, group=None):
        distributed.require_group("LatentShardedTrainer")
        if cfg.orthogonality_coeff > 0:
            raise ValueError(
                f"TrainConfig.orthogonality_coeff={cfg.orthogonality_coeff} is not supported "
                f"by LatentShardedTrainer (the penalty searches each atom's nearest neighbour "
                f"over every rank's decoder rows); use orthogonality_coeff=0"
            )
        group = group if group is not None else dist.group.WORLD
        configs = [None] * distributed.world_size(group)
        dist.all_gather_object(configs, sae.cfg.to_dict(), group=group)
        if any(c != configs[0] for c in configs):
            raise ValueError(
                f"every rank must pass the same SAE to LatentShardedTrainer, got the configs "
                f"{configs}: build it from the same SAEConfig (seed included) on every rank"
            )
        super().__init__(LatentShardedTopK.from_sae(sae, group), cfg)
        self.group = group
        self.rank, self.world_size = distributed.rank(group), distributed.world_size(group)
        self.is_main = self.rank == 0
        n_local = self.sae.hi - self.sae.lo
        self.tokens_since_fired = torch.zeros(n_local, dtype=torch.long, device=cfg.device)

    @torch.no_grad()
    def _initialise(self, x: Tensor) -> None:
        super()._initialise(x)
        # b_dec from the same batch on every rank; rank 0's, so that it is replicated exactly
        dist.broadcast(self.sae.b_dec, dist.get_global_rank(self.group, 0), group=self.group)

    def _reduce_gradients(self, total: Tensor) -> Tensor:
        distributed.all_reduce_mean_([self.sae.b_dec.grad], self.group)
        return total  # the same loss on every rank

    def _finite(self, total: Tensor) -> bool:
        finite = torch.tensor(float(super()._finite(total)), device=self.cfg.device)  # NCCL: on GPU
        dist.all_reduce(finite, dist.ReduceOp.MIN, group=self.group)
        return bool(finite)

    def _sum_over_latents(self, values: Tensor) -> Tensor:
        values = values.clone()
        dist.all_reduce(values, dist.ReduceOp.SUM, group=self.group)
        return values

    # -- checkpoints: a folder per rank ----------------------------------------------
    def _checkpoint_extras(self) -> dict:
        return {"shard": self._shard()}

    def _shard(self) -> dict:
        return {"rank": self.rank, "world_size": self.world_size, "lo": self.sae.lo}

    def has_checkpoint(self, directory: str | Path) -> bool:
        """Whether any rank finds a block checkpoint (of any world size) in ``directory``."""
        found = torch.tensor(float(bool(_world_sizes(directory))), device=self.cfg.device)
        dist.all_reduce(found, dist.ReduceOp.MAX, group=self.group)
        return bool(found)

    def save_checkpoint(self, directory: str | Path) -> None:
        """Each rank writes its block to its folder; every rank returns once all are written."""
        super().save_checkpoint(shard_dir(directory, self.rank, self.world_size))
        dist.barrier(group=self.group)

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore every rank's block at the newest step that all ranks have intact.

        Raises ValueError on every rank when the checkpoint was written by another number
        of ranks, or when no step is intact on all of them.
        """
        directory = Path(directory)
        sizes = _world_sizes(directory)
        if sizes and self.world_size not in sizes:
            raise ValueError(
                f"checkpoint in {directory} holds the blocks of a run on {sorted(sizes)} "
                f"ranks (shard-<rank>-of-<n> folders), this run has {self.world_size}: "
                f"relaunch with torchrun --nproc_per_node {min(sizes)} to resume, or read the "
                f"whole SAE with load_sharded_sae({str(directory)!r}) and start a new run"
            )
        own = _steps(shard_dir(directory, self.rank, self.world_size))
        steps = [None] * self.world_size
        dist.all_gather_object(steps, sorted(own), group=self.group)
        for step in _common_steps(steps):
            try:
                tensors, meta = read_checkpoint(own[step])
                error = None
            except DamagedCheckpoint as err:
                error = f"rank {self.rank}: {err}"
            errors = [None] * self.world_size
            dist.all_gather_object(errors, error, group=self.group)
            errors = [e for e in errors if e]
            if not errors:
                if step != max(own):
                    warnings.warn(
                        f"rank {self.rank} resumes from {own[step]} (step {step}), the newest "
                        f"step every rank has intact (its own newest, step {max(own)}, is "
                        f"damaged or missing on another rank: a save was interrupted)",
                        stacklevel=2,
                    )
                _check_shard(own[step], meta, self._shard())
                self._restore(own[step], tensors, meta)
                return
            warnings.warn(f"{'; '.join(errors)}; trying an older step", stacklevel=2)
        raise ValueError(
            f"no checkpoint step is intact on every rank in {directory} (steps per rank: "
            f"{steps}); delete {directory} to train from the start"
        )


def load_sharded_sae(directory: str | Path) -> TopKSAE:
    """The whole TopK SAE saved by a ``LatentShardedTrainer`` in ``directory``, as one
    ordinary ``TopKSAE`` (one process, no torchrun; it must fit in this host's memory).

    Reads every rank's block at the newest step all ranks have intact (checksums verified).
    """
    directory = Path(directory)
    sizes = _world_sizes(directory)
    if len(sizes) != 1:
        raise ValueError(
            f"{directory} must hold the blocks of one latent-sharded run (shard-<rank>-of-<n> "
            f"folders for one n), found world sizes {sorted(sizes)}"
        )
    n = sizes.pop()
    folders = [_steps(shard_dir(directory, r, n)) for r in range(n)]
    for step in _common_steps([sorted(f) for f in folders]):
        try:
            parts = [read_checkpoint(f[step]) for f in folders]
        except DamagedCheckpoint as err:
            warnings.warn(f"{err}; trying an older step", stacklevel=2)
            continue
        for r, (f, (_, meta)) in enumerate(zip(folders, parts, strict=True)):
            _check_shard(f[step], meta, {"rank": r, "world_size": n})
        blocks = {
            name: torch.cat([t["sae"][name] for t, _ in parts], dim=dim)
            for name, dim in LATENT_DIMS.items()
        }
        blocks["b_dec"] = parts[0][0]["sae"]["b_dec"]
        return assemble(SAEConfig.from_dict(parts[0][1]["sae_config"]), blocks)
    raise ValueError(
        f"no checkpoint step is intact on every rank in {directory} (steps per rank: "
        f"{[sorted(f) for f in folders]})"
    )


def _world_sizes(directory: str | Path) -> set[int]:
    """The world sizes of the block checkpoints in ``directory`` (their folder names)."""
    directory = Path(directory)
    if not directory.is_dir():
        return set()
    names = (_SHARD.fullmatch(p.name.removesuffix(".old")) for p in directory.iterdir())
    return {int(m.group(2)) for m in names if m}


def _steps(folder: Path) -> dict[int, Path]:
    """``{step: folder}`` of ``folder`` and ``folder.old`` (unverified: their JSON only)."""
    found = {}
    for candidate in reversed(candidates(folder)):  # the newer wins a tie
        try:
            found[int(read_json(candidate / META_FILE)["step"])] = candidate
        except (ValueError, KeyError, TypeError):
            continue  # unreadable: damaged, never a step to agree on
    return found


def _common_steps(steps_per_rank: list[list[int]]) -> list[int]:
    """The steps every rank has, newest first."""
    return sorted(set.intersection(*(set(s) for s in steps_per_rank)), reverse=True)


def _check_shard(folder: Path, meta: dict, expected: dict) -> None:
    """The block ``folder`` holds is the one expected (rank, world size, first latent)."""
    saved = meta.get("shard", {})
    if any(saved.get(k) != v for k, v in expected.items()):
        raise ValueError(
            f"checkpoint {folder} holds the block {saved}, expected {expected}: the folder "
            f"was renamed or copied from another run; use another checkpoint_dir"
        )
