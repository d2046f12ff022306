"""Batch sources whose rank 1 kills itself (SIGKILL) when it reaches batch KILL_AT, and a
training run for torchrun built on one.

    torchrun --standalone --nproc_per_node 2 tests/torchrun_dying.py run.json KILL_AT

Used by tests/test_data_parallel.py and tests/test_latent_sharded.py: a crash mid-run
(under torchrun or ``run_local``), then a resume.
"""

import os
import signal
import sys
from pathlib import Path

from saelib import distributed
from saelib.data import ShardedBatches, TensorBatches
from saelib.io import read_json
from saelib.lm import launch


class _Dies:
    """Mixin for a source with ``iter_from``: rank 1 dies at batch ``kill_at`` (None: never)."""

    kill_at: int | None = None

    def iter_from(self, step):
        for i, x in enumerate(super().iter_from(step), start=step):
            if distributed.rank() == 1 and i == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            yield x


class DyingShards(_Dies, ShardedBatches):
    def __init__(self, kill_at, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kill_at = kill_at


class DyingTensors(_Dies, TensorBatches):
    def __init__(self, kill_at, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kill_at = kill_at


if __name__ == "__main__":
    config, kill_at = read_json(Path(sys.argv[1])), int(sys.argv[2])
    distributed.init_from_env("cpu", timeout_s=60)
    data = launch.batches_from(config["data"], config["batch_size"], config["seed"])
    launch.run(config, DyingShards(kill_at, data.paths, data.batch_size, seed=data.seed))
