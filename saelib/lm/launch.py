"""Train an SAE on cached activations from a JSON config: in one process or under torchrun.

    python -m saelib.lm.launch --config run.json
    torchrun --nproc_per_node 2 -m saelib.lm.launch --config run.json

``run.json``::

    {"sae":   {"d_in": 576, "d_sae": 4608, "architecture": "topk", "k": 32},   SAEConfig
     "train": {"n_steps": 2000, "lr": 4e-4, "checkpoint_dir": "runs/topk",
               "checkpoint_every": 200},                                       TrainConfig
     "data":  {"cache": "<activation cache folder>", "hook": "blocks.6.hook_resid_post"},
     "batch_size": 4096, "seed": 0}

``data`` may instead list safetensors shards: ``{"shards": ["a.safetensors", ...]}``.
Under torchrun (``WORLD_SIZE`` set) the run is data parallel
(``saelib.data_parallel.DataParallelTrainer``): every rank streams the same global batches
and trains on its slice. The weights end in ``checkpoint_dir`` (written by rank 0);
launching the same command again resumes from it, with any number of processes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from saelib import distributed
from saelib.data import ShardedBatches
from saelib.data_parallel import DataParallelTrainer
from saelib.io import read_json
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer
from saelib.validation import require

KEYS = ("sae", "train", "data", "batch_size", "seed")


def batches_from(data: dict, batch_size: int, seed: int):
    """The batch source a config's ``data`` names: a cache and hook, or shard paths."""
    if "cache" in data:
        from saelib.lm.activations import open_cache

        return open_cache(data["cache"]).batches(data["hook"], batch_size, seed=seed)
    require("shards" in data, "data", data, 'a {"cache": ..., "hook": ...} or {"shards": [...]}')
    return ShardedBatches(data["shards"], batch_size, seed=seed, dtype=torch.float32)


def trainer_from(config: dict) -> Trainer:
    """The trainer a config describes: data parallel when a process group is running."""
    missing = [k for k in KEYS if k not in config]
    require(not missing, "config", sorted(config), f"the keys {list(KEYS)} (missing {missing})")
    require(config["train"].get("checkpoint_dir"), "train.checkpoint_dir", None, "a folder name")
    sae = make_sae(SAEConfig.from_dict(config["sae"]))
    train = dict(config["train"])
    if "betas" in train:
        train["betas"] = tuple(train["betas"])
    cfg = TrainConfig(**train)
    if torch.distributed.is_initialized():
        return DataParallelTrainer(sae, cfg)
    return Trainer(sae, cfg)


def run(config: dict, batches=None) -> Trainer:
    """Train to ``train.n_steps`` (resuming from ``checkpoint_dir``); returns the trainer."""
    trainer = trainer_from(config)
    if batches is None:
        batches = batches_from(config["data"], config["batch_size"], config["seed"])
    trainer.fit(batches)
    return trainer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="the run's JSON config")
    args = parser.parse_args(argv)
    config = read_json(args.config)
    if "WORLD_SIZE" in os.environ:
        distributed.init_from_env(config["train"].get("device", "cpu"))
    try:
        trainer = run(config)
        if distributed.is_main():
            summary = {"step": trainer.step, "tokens_seen": trainer.tokens_seen}
            summary["checkpoint_dir"] = config["train"]["checkpoint_dir"]
            print(json.dumps(summary))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
