"""What a training checkpoint holds besides the SAE: optimizer state as named tensors, the
settings a resumed run must share, and Ctrl-C held back until a save is whole.

Used by ``saelib.training.Trainer.save_checkpoint`` / ``load_checkpoint``; safetensors for
tensors, JSON for the rest, never pickle.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
from pathlib import Path

from torch import Tensor


@contextlib.contextmanager
def sigint_deferred():
    """Turn Ctrl-C into a flag checked between steps, so a checkpoint is never half a step."""
    hit = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, lambda *_: hit.append(True))
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, previous)


# Settings that do not change the trained weights, so a resumed run may change them.
# sparse_topk changes only the rounding of the same gradients.
FREE_SETTINGS = {
    "device",
    "progress",
    "log_every",
    "checkpoint_dir",
    "checkpoint_every",
    "sparse_topk",
}


def run_settings(train_config: dict) -> dict:
    settings = {k: v for k, v in train_config.items() if k not in FREE_SETTINGS}
    settings["betas"] = list(settings["betas"])  # JSON has lists, the dataclass a tuple
    return settings


def find_checkpoint(directory: str | Path) -> Path | None:
    """The complete checkpoint: ``directory``, or ``<directory>.old`` after a crash mid-save."""
    for candidate in (Path(directory), Path(f"{directory}.old")):
        if (candidate / "trainer.json").is_file():
            return candidate
    return None


def contiguous(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: t.detach().contiguous().cpu() for name, t in tensors.items()}


def flatten_optimizer(state_dict: dict) -> tuple[dict[str, Tensor], dict]:
    """Split a torch optimizer state dict into named tensors and JSON metadata."""
    tensors, scalars = {}, {}
    for pid, pstate in state_dict["state"].items():
        for name, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"{pid}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{name}"] = value
    meta = {"param_groups": state_dict["param_groups"], "scalars": scalars}
    return tensors, meta


def unflatten_optimizer(tensors: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in itertools.chain(tensors.items(), meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}
