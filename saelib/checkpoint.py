"""What a training checkpoint holds besides the SAE: optimizer state as named tensors, the
settings a resumed run must share, checksums, and Ctrl-C held back until a save is whole.

Used by ``saelib.training.Trainer.save_checkpoint`` / ``load_checkpoint``; safetensors for
tensors, JSON for the rest, never pickle. A checkpoint folder::

    sae.safetensors  optimizer.safetensors  trainer.safetensors   tensors
    trainer.json                                                  step, history, configs
    checksums.json                                                sha256 of the four above

``checksums.json`` is written last and checked before anything is read, so a flipped bit
or a truncated file anywhere is found; the previous checkpoint is kept beside it as
``<dir>.old`` and is used instead (with a warning naming both) when ``<dir>`` is damaged.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from saelib.files import atomic_path, sha256_bytes, sha256_file
from saelib.io import read_json, read_tensors, tensor_bytes

TENSOR_FILES = ("sae", "optimizer", "trainer")  # <name>.safetensors
META_FILE, CHECKSUMS_FILE = "trainer.json", "checksums.json"


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


def candidates(directory: str | Path) -> list[Path]:
    """Checkpoint folders to try, newest first: ``directory``, then ``<directory>.old``."""
    return [c for c in (Path(directory), Path(f"{directory}.old")) if (c / META_FILE).is_file()]


def find_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint folder (``directory`` or ``<directory>.old``), unverified."""
    found = candidates(directory)
    return found[0] if found else None


class DamagedCheckpoint(ValueError):
    """A checkpoint file is missing, unreadable, non-finite or differs from its checksum."""


def write_checkpoint(directory: Path, tensors: dict[str, dict[str, Tensor]], meta: dict) -> None:
    """Write one checkpoint folder atomically, keeping the previous one as ``<dir>.old``.

    ``tensors`` maps each of :data:`TENSOR_FILES` to named tensors. The sha256 of every
    file is taken from the bytes written and stored in ``checksums.json``, written last.
    """
    files = {f"{name}.safetensors": tensor_bytes(tensors[name]) for name in TENSOR_FILES}
    files[META_FILE] = json.dumps(meta, indent=1).encode()
    sums = {"sha256": {name: sha256_bytes(data) for name, data in files.items()}}
    files[CHECKSUMS_FILE] = json.dumps(sums, indent=1).encode()
    with atomic_path(directory, keep_old=True) as tmp:
        tmp.mkdir(parents=True)
        for name, data in files.items():
            (tmp / name).write_bytes(data)


def read_checkpoint(directory: Path) -> tuple[dict[str, dict[str, Tensor]], dict]:
    """The verified tensors (on the CPU) and metadata of one checkpoint folder.

    Raises :class:`DamagedCheckpoint` naming the file when a checksum differs, a file is
    missing or unreadable, or a saved tensor holds NaN or inf. A folder without
    ``checksums.json`` (written before saelib stored them) loads with a warning.
    """
    sums_path = directory / CHECKSUMS_FILE
    try:
        if sums_path.is_file():
            for name, digest in read_json(sums_path)["sha256"].items():
                path = directory / name
                if not path.is_file():
                    raise ValueError(f"{path}: file not found (listed in {CHECKSUMS_FILE})")
                if sha256_file(path) != digest:
                    raise ValueError(
                        f"{path}: sha256 differs from the one in {CHECKSUMS_FILE}: the file "
                        f"changed after saving (a flipped bit, a truncated copy)"
                    )
        else:
            warnings.warn(
                f"checkpoint {directory} has no {CHECKSUMS_FILE} (saved by an older saelib): "
                f"loading it unverified; the next save adds checksums",
                stacklevel=4,
            )
        meta = read_json(directory / META_FILE)
        tensors = {n: read_tensors(directory / f"{n}.safetensors") for n in TENSOR_FILES}
        for n in ("sae", "optimizer"):
            for key, t in tensors[n].items():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise ValueError(f"{directory / n}.safetensors: tensor {key!r} has NaN or inf")
        missing = [k for k in ("step", "tokens_seen", "history", "optimizer") if k not in meta]
        if missing:
            raise ValueError(f"{directory / META_FILE}: missing keys {missing}")
    except (ValueError, KeyError, TypeError) as err:
        if isinstance(err, KeyError):
            err = ValueError(f"{sums_path}: no 'sha256' table")
        raise DamagedCheckpoint(str(err)) from None
    return tensors, meta


def load_newest(directory: str | Path) -> tuple[Path, dict[str, dict[str, Tensor]], dict]:
    """The newest intact checkpoint of ``directory``: ``(folder, tensors, meta)``.

    ``<directory>`` is tried first, then ``<directory>.old``; falling back warns, naming
    the damaged folder, why, and the one used. Raises ValueError when none is intact.
    """
    found = candidates(directory)
    if not found:
        raise ValueError(
            f"no checkpoint ({META_FILE}) in {directory} or {directory}.old; "
            f"check the path, or train from the start"
        )
    damaged = []
    for folder in found:
        try:
            tensors, meta = read_checkpoint(folder)
        except DamagedCheckpoint as err:
            damaged.append(f"{folder} is damaged: {err}")
            continue
        if damaged:
            warnings.warn(
                f"{'; '.join(damaged)}; resuming from the previous checkpoint {folder} "
                f"(step {meta['step']}) instead",
                stacklevel=3,
            )
        return folder, tensors, meta
    raise ValueError(
        f"no intact checkpoint in {directory}: {'; '.join(damaged)}; restore a good copy, "
        f"or delete {directory} (and {directory}.old) to train from the start"
    )


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
