"""saelib.lm.launch: a training run from a JSON config (one process here; torchrun in
tests/test_data_parallel.py)."""

import json

import pytest
import torch

from saelib.data import write_shards
from saelib.lm import launch
from saelib.saes import SAEConfig


def _config(tmp_path):
    x = torch.randn(128, 8, generator=torch.Generator().manual_seed(0))
    shards = write_shards(x, tmp_path / "shards", rows_per_shard=64)
    return {
        "sae": SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2).to_dict(),
        "train": {"n_steps": 6, "progress": False, "checkpoint_dir": str(tmp_path / "run")},
        "data": {"shards": [str(p) for p in shards]},
        "batch_size": 16,
        "seed": 0,
    }


def test_cli_trains_and_a_second_launch_resumes(tmp_path, capsys):
    config = _config(tmp_path)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    launch.main(["--config", str(path)])
    assert json.loads(capsys.readouterr().out)["step"] == 6
    trainer = launch.trainer_from(config)
    assert type(trainer).__name__ == "Trainer"  # no process group: one process
    trainer.fit(launch.batches_from(config["data"], 16, 0))
    assert trainer.restored_from is not None and trainer.step == 6


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c.pop("data"), r"config must be the keys .* \(missing \['data'\]\)"),
        (lambda c: c["train"].pop("checkpoint_dir"), "train.checkpoint_dir must be a folder"),
        (lambda c: c.update(data={"files": []}), r'data must be a \{"cache": ...'),
    ],
)
def test_config_errors_name_the_key(tmp_path, change, match):
    config = _config(tmp_path)
    change(config)
    with pytest.raises(ValueError, match=match):
        launch.run(config)
