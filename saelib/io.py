"""Saving and loading SAEs: safetensors for tensors, JSON for configs, never pickle.

saelib's own folder format (``save_sae`` / ``load_sae``), lossless for every architecture::

    config.json          SAEConfig.to_dict() + format, saelib_version, weights_sha256
    weights.safetensors  sae.state_dict()

SAELens v6 folders: ``saelib.saelens`` (it uses the file helpers below).
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from saelib.files import atomic_path, sha256_bytes, sha256_file
from saelib.saes import SAE, SAEConfig, make_sae
from saelib.validation import check_int

FORMAT = "saelib.sae.v1"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "weights.safetensors"


# -- saelib's own format ------------------------------------------------------------------
def save_sae(sae: SAE, directory: str | Path) -> Path:
    """Write ``config.json`` and ``weights.safetensors`` (the state_dict) into ``directory``."""
    weights = tensor_bytes(sae.state_dict())
    config = {"format": FORMAT, "saelib_version": saelib_version(), **sae.cfg.to_dict()}
    config["weights_sha256"] = sha256_bytes(weights)
    write_files(directory, {WEIGHTS_FILE: weights, CONFIG_FILE: json_bytes(config, CONFIG_FILE)})
    return Path(directory)


def load_sae(directory: str | Path, device: str | torch.device = "cpu") -> SAE:
    """Load an SAE written by ``save_sae``; its outputs are bit-identical to the saved one's.

    Raises ValueError, naming the file and key or tensor, when a file is missing or
    unreadable, the format is unknown, a tensor is missing, extra, of the wrong shape or
    holds NaN or inf, or the weights' sha256 is missing or differs from the one recorded
    at saving. The SAE comes back in
    training mode, as any new module: call ``.eval()`` for inference (BatchTopK needs it).
    """
    directory = Path(directory)
    cfg_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    is_saelens = (directory / "cfg.json").exists()  # saelib.saelens.SAELENS_CFG_FILE
    hint = " (a SAELens folder: use saelib.saelens.load_saelens)" if is_saelens else ""
    if is_saelens and not cfg_path.is_file():
        raise ValueError(f"{cfg_path}: file not found{hint}")
    config = read_json(cfg_path)
    fmt = config.pop("format", None)
    if fmt != FORMAT:
        raise ValueError(f"{cfg_path}: 'format' is {fmt!r}, expected {FORMAT!r}{hint}")
    config.pop("saelib_version", None)
    sha256 = config.pop("weights_sha256", None)
    if not isinstance(sha256, str):  # every save_sae wrote one: its absence is an edit
        raise ValueError(
            f"{cfg_path}: 'weights_sha256' is {sha256!r}; save_sae always writes the weights' "
            f"sha256, so the file was edited: restore it, or re-save the SAE with save_sae"
        )
    try:
        sae = make_sae(SAEConfig.from_dict(config))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path}: invalid SAE config: {e}") from e
    tensors = read_tensors(weights_path)
    check_tensors(weights_path, tensors, {k: v.shape for k, v in sae.state_dict().items()})
    if sha256_file(weights_path) != sha256:
        raise ValueError(
            f"{weights_path}: sha256 differs from 'weights_sha256' in {CONFIG_FILE}: "
            "the file is corrupted or was changed after saving"
        )
    return fill_sae(sae, tensors, device)


# -- files --------------------------------------------------------------------------------
def fill_sae(sae: SAE, tensors: dict[str, Tensor], device: str | torch.device) -> SAE:
    """Copy checked ``tensors`` into ``sae``, moved to ``device`` and to their dtype."""
    sae = sae.to(device=device, dtype=tensors["W_dec"].dtype)
    sae.load_state_dict(tensors)
    return sae


def check_tensors(path: Path, tensors: dict[str, Tensor], shapes: dict) -> None:
    missing = [name for name in shapes if name not in tensors]
    extra = [name for name in tensors if name not in shapes]
    if missing or extra:
        problems = [f"missing tensors {missing}"] if missing else []
        problems += [f"unexpected tensors {extra}"] if extra else []
        raise ValueError(f"{path}: {'; '.join(problems)}; expected exactly {list(shapes)}")
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise ValueError(
                f"{path}: tensor {name!r} has shape {list(tensors[name].shape)}, "
                f"expected {list(shape)}"
            )
        t = tensors[name]
        if not t.is_floating_point():
            continue
        # -inf is a valid log_threshold: threshold 0 (a SAELens threshold <= 0)
        bad = t.isnan() | (t == torch.inf if name == "log_threshold" else t.isinf())
        if bool(bad.any()):
            n_bad = int(bad.sum())
            raise ValueError(
                f"{path}: tensor {name!r} has {n_bad} NaN or inf values; the file is damaged "
                f"or the SAE diverged before saving"
            )


def read_tensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def positive_int(raw: dict, key: str, path: Path) -> int:
    return check_int(f"{path}: {key!r}", raw.get(key), low=1)


def tensor_bytes(tensors: dict[str, Tensor]) -> bytes:
    return save({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()})


def json_bytes(obj: dict, name: str) -> bytes:
    try:
        return (json.dumps(obj, indent=2) + "\n").encode()
    except TypeError as e:
        raise ValueError(
            f"{name}: config is not JSON-serialisable ({e}); metadata values must be "
            "strings, numbers, booleans, None, lists or dicts"
        ) from e


def write_files(directory: str | Path, files: dict[str, bytes]) -> None:
    """Write each file to a temporary name, then rename: no half-written file is left."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():  # weights first: the config names what they hold
        with atomic_path(directory / name) as tmp:
            tmp.write_bytes(data)


def saelib_version() -> str:
    try:
        return version("saelib")
    except PackageNotFoundError:
        return "unknown"
