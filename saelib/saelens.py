"""SAELens v6 folders (``save_saelens`` / ``load_saelens``), for the linear-encoder SAEs::

    cfg.json                 d_in, d_sae, dtype, device, apply_b_dec_to_input,
                             normalize_activations, reshape_activations, architecture,
                             k and rescale_acts_by_decoder_norm (topk only),
                             metadata {model_name, hook_name, sae_lens_version, ...}
    sae_weights.safetensors  W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
                             b_dec [d_in]; + threshold [d_sae] (jumprelu);
                             gated: b_gate, r_mag, b_mag instead of b_enc

How the architectures map (x_c = x - b_dec when apply_b_dec_to_input, z = x_c @ W_enc + b_enc)::

    saelib     SAELens    codes f, identical in both
    relu       standard   ReLU(z)                  (the L1 penalty is training-only)
    topk       topk       ReLU(TopK_k(z))
    jumprelu   jumprelu   z * (z > threshold),     threshold = exp(log_threshold)
    gated      gated      (x_c @ W_enc + b_gate > 0) * ReLU(x_c @ (W_enc * exp(r_mag)) + b_mag)
    batchtopk  jumprelu   z * (z > t),             t = the inference threshold, repeated [d_sae]
    matryoshka jumprelu   as batchtopk (its nested losses are training-only)
    mp         matching_pursuit  pursuit on W_dec's atoms (no W_enc, b_enc); mp_steps,
                          mp_residual_threshold, mp_stop_on_repeat as max_iterations,
                          residual_threshold, stop_on_duplicate_support
    mlp        (none)     save_saelens raises ValueError
    lista      (none)     save_saelens raises ValueError

A BatchTopK SAE therefore comes back from SAELens's format as a JumpReLU SAE whose codes
equal the BatchTopK SAE's inference-mode (``.eval()``) codes; SAELens saves its own trained
BatchTopK SAEs the same way. Decoding is ``f @ W_dec + b_dec`` in both libraries.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from saelib.io import (
    check_tensors,
    fill_sae,
    json_bytes,
    positive_int,
    read_json,
    read_tensors,
    saelib_version,
    tensor_bytes,
    write_files,
)
from saelib.saes import SAE, SAEConfig, make_sae

SAELENS_CFG_FILE, SAELENS_WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"
SAELENS_VERSION = "6.0.0"  # SAELens reads metadata.sae_lens_version to pick its cfg parser
TO_SAELENS = {
    "relu": "standard",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "gated": "gated",
    "batchtopk": "jumprelu",
    "matryoshka": "jumprelu",
    "mp": "matching_pursuit",
}
FROM_SAELENS = {
    "standard": "relu",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "gated": "gated",
    "matching_pursuit": "mp",
}
# saelib's MP-SAE settings and SAELens's names for them (the same semantics)
MP_SETTINGS = {
    "mp_steps": "max_iterations",
    "mp_residual_threshold": "residual_threshold",
    "mp_stop_on_repeat": "stop_on_duplicate_support",
}
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
# SAELens < 6 kept provenance at the top level of cfg.json, some of it under older names.
_OLD_METADATA_KEYS = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index"}
_METADATA_KEYS = (
    "model_name", "hook_name", "hook_layer", "hook_head_index", "context_size", "prepend_bos",
    "dataset_path", "dataset_trust_remote_code", "model_from_pretrained_kwargs",
    "sae_lens_training_version", "neuronpedia_id", "seqpos_slice", "exclude_special_tokens",
)  # fmt: skip


# -- SAELens v6 folder format -------------------------------------------------------------
def save_saelens(sae: SAE, directory: str | Path, metadata: dict | None = None) -> Path:
    """Write ``sae`` in SAELens's v6 folder format (``cfg.json``, ``sae_weights.safetensors``).

    ``metadata`` (e.g. ``{"model_name": ..., "hook_name": ..., "context_size": ...}``) is
    merged over ``sae.cfg.metadata`` into cfg.json's metadata. A tied SAE is written with
    its encoder explicit (``W_enc = W_dec.T``), so it loads back untied. BatchTopK is written
    as JumpReLU with its inference threshold repeated per latent (see the module docstring);
    it raises ValueError while that threshold is not estimated yet. MLP SAEs have no SAELens
    counterpart: ValueError.
    """
    arch = sae.cfg.architecture
    if arch not in TO_SAELENS:
        raise ValueError(
            f"architecture {arch!r} has no SAELens equivalent; save_saelens supports "
            f"{list(TO_SAELENS)} (use save_sae for saelib's own format)"
        )
    meta = {"model_name": None, "hook_name": None, **sae.cfg.metadata, **(metadata or {})}
    meta.setdefault("sae_lens_version", SAELENS_VERSION)
    meta.setdefault("saelib_version", saelib_version())
    cfg = {
        "architecture": TO_SAELENS[arch],
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "dtype": str(sae.W_dec.dtype).removeprefix("torch."),
        "device": "cpu",  # the file's tensors are on the CPU; loaders pick the device
        "apply_b_dec_to_input": sae.cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": meta,
    }
    if arch == "topk":
        cfg |= {"k": sae.cfg.k, "rescale_acts_by_decoder_norm": False}
    if arch == "mp":
        cfg |= {theirs: getattr(sae.cfg, ours) for ours, theirs in MP_SETTINGS.items()}
    files = {
        SAELENS_WEIGHTS_FILE: tensor_bytes(_saelens_tensors(sae)),
        SAELENS_CFG_FILE: json_bytes(cfg, SAELENS_CFG_FILE),
    }
    write_files(directory, files)
    return Path(directory)


def load_saelens(directory: str | Path, device: str | torch.device = "cpu") -> SAE:
    """Load a SAELens folder (``cfg.json``, ``sae_weights.safetensors``) as an untied saelib SAE.

    Reads architectures standard (-> relu), topk, jumprelu (-> jumprelu with
    ``log_threshold = log(threshold)``, chosen so that ``exp`` gives the stored threshold
    back bit for bit: always for files saelib wrote; for arbitrary float32 thresholds
    measured 85% exact on uniform (0, 1) and 69% on uniform (0, 10), the rest a few ulp
    off, mostly 1, up to 7 near 0) and gated, in the dtype cfg.json names.
    Also reads SAELens < 6 cfgs: no ``architecture`` means standard, ``activation_fn: topk``
    with ``activation_fn_kwargs.k`` means topk, provenance at the top level becomes metadata.
    A topk cfg with ``rescale_acts_by_decoder_norm`` is folded into the weights (same codes,
    up to rounding). Anything that would change the SAE's function and that saelib cannot
    express (``normalize_activations`` other than "none", another architecture, a finetuning
    scaling factor) raises ValueError naming the key and the allowed values, and so do
    missing, extra or misshapen tensors.
    """
    directory = Path(directory)
    cfg_path, weights_path = directory / SAELENS_CFG_FILE, directory / SAELENS_WEIGHTS_FILE
    raw = read_json(cfg_path)
    arch, k = _saelens_architecture(raw, cfg_path)
    _check_saelens_options(raw, cfg_path)
    d_in, d_sae = (positive_int(raw, key, cfg_path) for key in ("d_in", "d_sae"))
    dtype_name = str(raw.get("dtype", "float32")).removeprefix("torch.")
    if dtype_name not in DTYPES:
        raise ValueError(f"{cfg_path}: 'dtype' is {dtype_name!r}; allowed: {list(DTYPES)}")
    tensors = read_tensors(weights_path)
    if "log_threshold" in tensors and "threshold" not in tensors:  # older JumpReLU checkpoints
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    scale = tensors.pop("scaling_factor", None)  # SAELens < 6 wrote it; all ones is a no-op
    if scale is not None and not torch.all(scale == 1):
        raise ValueError(f"{weights_path}: 'scaling_factor' is not all ones; not supported")
    check_tensors(weights_path, tensors, _saelens_shapes(arch, d_in, d_sae))
    tensors = {name: t.to(DTYPES[dtype_name]) for name, t in tensors.items()}
    if arch == "topk" and raw.get("rescale_acts_by_decoder_norm", False):
        _fold_decoder_norm_(tensors)
    metadata = _saelens_metadata(raw)
    mp = {ours: raw[theirs] for ours, theirs in MP_SETTINGS.items() if theirs in raw}
    try:
        cfg = SAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            architecture=FROM_SAELENS[arch],
            k=k,
            apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
            metadata=metadata,
            **(mp if arch == "matching_pursuit" else {}),
        )
    except ValueError as e:
        raise ValueError(f"{cfg_path}: {e}") from e
    return fill_sae(make_sae(cfg), _saelib_state(arch, tensors), device)


# -- SAELens mapping ----------------------------------------------------------------------
def _saelens_tensors(sae: SAE) -> dict[str, Tensor]:
    arch = sae.cfg.architecture
    if arch == "mp":  # the pursuit runs on the decoder's atoms: no encoder weights
        return {"W_dec": sae.W_dec, "b_dec": sae.b_dec}
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}  # W_enc [d_in, d_sae]
    if arch == "gated":  # saelib's (W_enc, b_enc) is the gate path: SAELens's (W_enc, b_gate)
        tensors |= {"b_gate": sae.b_enc, "r_mag": sae.r_mag, "b_mag": sae.b_mag}
    else:
        tensors["b_enc"] = sae.b_enc
    if arch == "jumprelu":
        tensors["threshold"] = sae.threshold  # [d_sae]
    if arch in ("batchtopk", "matryoshka"):
        if sae.threshold < 0:
            raise ValueError(
                f"{arch} threshold is negative, i.e. not estimated yet: train the SAE "
                "(the trainer calls update_statistics) before saving it for SAELens"
            )
        tensors["threshold"] = sae.threshold.expand(sae.cfg.d_sae)  # scalar -> [d_sae]
    return tensors


def _saelens_architecture(raw: dict, path: Path) -> tuple[str, int | None]:
    arch = raw.get("architecture", "standard")  # SAELens < 6 omitted it for standard SAEs
    activation = raw.get("activation_fn", raw.get("activation_fn_str", "relu"))
    k = raw.get("k")
    if activation == "topk" and arch in ("standard", "topk"):  # SAELens < 6 TopK SAEs
        arch = "topk"
        k = k if k is not None else (raw.get("activation_fn_kwargs") or {}).get("k")
    elif activation != "relu":
        raise ValueError(
            f"{path}: 'activation_fn' is {activation!r}; allowed: 'relu', or 'topk' "
            "with architecture 'standard' or 'topk'"
        )
    if arch not in FROM_SAELENS:
        raise ValueError(
            f"{path}: 'architecture' is {arch!r}; load_saelens reads {list(FROM_SAELENS)} "
            "(SAELens saves trained BatchTopK SAEs as 'jumprelu')"
        )
    if arch == "topk" and k is None:
        raise ValueError(f"{path}: 'k' is missing; a topk SAE needs it")
    return arch, (k if arch == "topk" else None)


def _check_saelens_options(raw: dict, path: Path) -> None:
    norm = raw.get("normalize_activations", "none")
    if norm is None or norm is False:  # SAELens < 6 used null or a bool
        norm = "none"
    if norm != "none":
        raise ValueError(
            f"{path}: 'normalize_activations' is {norm!r}; allowed: 'none' (saelib SAEs read "
            "raw activations; fold the normalisation into the weights before exporting)"
        )
    reshape = raw.get("reshape_activations", "none")
    if reshape not in ("none", "hook_z"):
        raise ValueError(f"{path}: 'reshape_activations' is {reshape!r}; allowed: none, hook_z")
    if raw.get("finetuning_scaling_factor", False):
        raise ValueError(f"{path}: 'finetuning_scaling_factor' is set; allowed: false")


def _saelens_metadata(raw: dict) -> dict:
    if isinstance(raw.get("metadata"), dict):
        meta = dict(raw["metadata"])
    else:
        renamed = {_OLD_METADATA_KEYS.get(key, key): value for key, value in raw.items()}
        meta = {key: value for key, value in renamed.items() if key in _METADATA_KEYS}
    if raw.get("reshape_activations", "none") != "none":
        # The SAE itself is unchanged; its inputs are [..., n_heads * d_head], flattened.
        meta["reshape_activations"] = raw["reshape_activations"]
    return meta


def _saelens_shapes(arch: str, d_in: int, d_sae: int) -> dict[str, tuple[int, ...]]:
    if arch == "matching_pursuit":
        return {"W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if arch == "gated":
        return shapes | {"b_gate": (d_sae,), "r_mag": (d_sae,), "b_mag": (d_sae,)}
    shapes["b_enc"] = (d_sae,)
    if arch == "jumprelu":
        shapes["threshold"] = (d_sae,)
    return shapes


def _saelib_state(arch: str, t: dict[str, Tensor]) -> dict[str, Tensor]:
    if arch == "matching_pursuit":
        return {"W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    state = {"W_enc": t["W_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if arch == "gated":
        return state | {"b_enc": t["b_gate"], "r_mag": t["r_mag"], "b_mag": t["b_mag"]}
    state["b_enc"] = t["b_enc"]
    if arch == "jumprelu":
        state["log_threshold"] = _exact_log(t["threshold"])
    return state


def _fold_decoder_norm_(t: dict[str, Tensor]) -> None:
    """SAELens TopK with rescale_acts_by_decoder_norm: f = TopK(z * ||W_dec||),
    x_hat = (f / ||W_dec||) @ W_dec + b_dec. Folding the norms into W_enc, b_enc and the
    rows of W_dec gives the same f and x_hat with a plain TopK SAE."""
    norms = t["W_dec"].norm(dim=-1).clamp_min(1e-8)  # [d_sae]
    t["W_enc"], t["b_enc"] = t["W_enc"] * norms, t["b_enc"] * norms
    t["W_dec"] = t["W_dec"] / norms[:, None]


def _exact_log(theta: Tensor) -> Tensor:
    """``log(theta)``, moved by up to 2 ulps where that makes ``exp`` return ``theta`` exactly.

    SAELens stores thresholds, saelib learns their log; recovering the exact threshold
    keeps every ``z > theta`` decision as in the file. That always works for thresholds
    that are ``exp`` of a float (all that saelib writes); 15% of arbitrary float32
    thresholds uniform in (0, 1) are not (31% in (0, 10)), and stay a few ulp off (mostly 1;
    up to 7 measured, near 0). SAELens applies ReLU to thresholds, so
    theta <= 0 acts as 0 and becomes log 0 = -inf.
    """
    theta = theta.clamp_min(0)
    log = theta.log()
    if theta.dtype not in (torch.float32, torch.float64):
        return log
    out, found = log.clone(), log.exp() == theta
    up = down = log
    for _ in range(2):
        up = torch.nextafter(up, torch.full_like(up, math.inf))
        down = torch.nextafter(down, torch.full_like(down, -math.inf))
        for candidate in (up, down):
            hit = ~found & (candidate.exp() == theta)
            out, found = torch.where(hit, candidate, out), found | hit
    return out
