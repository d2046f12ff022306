"""The Trainer, data parallel over the ranks of a torch.distributed group.

    init_from_env("cpu")                                   # under torchrun
    trainer = DataParallelTrainer(make_sae(sae_cfg), train_cfg)
    trainer.fit(TensorBatches(x, batch_size=4096, seed=0)) # the same source on every rank

Every rank draws the same global batch and trains on its equal slice; one all-reduce per
step averages the gradients and the loss, so all ranks take the step one process would
take on the whole batch (the losses are means over rows, and the slices are equal). Dead
latents count the global batch (a latent fired if it fired on any rank); BatchTopK keeps
the ``k * batch`` largest of the global batch and its threshold is the global smallest
kept. Logged terms are global means. Rank 0 alone writes checkpoints (then every rank
waits for it), every rank resumes from them, and only rank 0 shows a progress bar.
Ctrl-C under torchrun reaches the ranks at different steps, so no checkpoint is written
on interruption: the run resumes from its last periodic one (``checkpoint_every``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from saelib import distributed
from saelib.saes import SAE
from saelib.training import TrainConfig, Trainer

__all__ = ["DataParallelTrainer"]


class DataParallelTrainer(Trainer):
    """``Trainer`` whose steps are taken together by the ranks of ``group`` (default: all)."""

    save_on_interrupt = False

    def __init__(self, sae: SAE, cfg: TrainConfig, group=None):
        distributed.require_group("DataParallelTrainer")
        super().__init__(sae, cfg)
        self.group = group if group is not None else dist.group.WORLD
        self.rank = distributed.rank(self.group)
        self.world_size = distributed.world_size(self.group)
        self.is_main = self.rank == 0
        if hasattr(self.sae, "batch_group"):
            self.sae.batch_group = self.group
        # Every rank starts from rank 0's weights (they agree anyway: seeded by cfg.seed).
        with torch.no_grad():
            for t in self.sae.state_dict().values():
                dist.broadcast(t, src=dist.get_global_rank(self.group, 0), group=self.group)

    def _local(self, x: Tensor) -> Tensor:
        return distributed.local_rows(x, self.group)

    def _reduce_gradients(self, total: Tensor) -> Tensor:
        params = [p for p in self.sae.parameters() if p.requires_grad]
        # A parameter unused on every rank keeps grad None (Adam skips it, as one process
        # would); one unused on some ranks only counts as a zero there.
        used = [p.grad is not None for p in params]
        used = torch.tensor(used, dtype=torch.uint8, device=total.device)
        dist.all_reduce(used, dist.ReduceOp.MAX, group=self.group)
        params = [p for p, u in zip(params, used.tolist(), strict=True) if u]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        total = total.detach().reshape(1).clone()
        distributed.all_reduce_mean_([*(p.grad for p in params), total], self.group)
        return total[0]

    def _reduce_fired(self, fired: Tensor) -> Tensor:
        fired = fired.to(torch.uint8)
        dist.all_reduce(fired, dist.ReduceOp.MAX, group=self.group)
        return fired.bool()

    def _reduce_log(self, values: Tensor) -> Tensor:
        values = values.clone()
        distributed.all_reduce_mean_([values], self.group)
        return values

    def save_checkpoint(self, directory: str | Path) -> None:
        """Rank 0 writes the checkpoint; every rank returns once it is complete."""
        if self.is_main:
            super().save_checkpoint(directory)
        dist.barrier(group=self.group)
