"""Pooled features on disk: computed once per (model, texts, site, SAE), verified on load.

    feats = cached_features(lm, texts, sites, saes, max_tokens=32)   # Features, as pooled_features
    table = probe_cached(tasks, lm, texts, sites, saes, layers_per_pass=4)   # probe_layers' rows

Each hook's pooled features go to ``<cache>/probing_features/<key>/features.safetensors``
(``x_last``, ``x_mean``, ``f_last``, ``f_mean``) with a ``manifest.json`` holding what the
key was computed from and the file's sha256. The key hashes the model's name, the texts
(in order), ``max_tokens``, the site (scale, norm limit, skipped positions) and the SAE's
weights, so a different SAE or text list never reads another's features. Loading checks
the sha256, the tensor names, shapes and finiteness (as the activation cache does) and
raises a ``ValueError`` naming the file when they do not match; nothing is pickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from torch import Tensor

from saelib.files import atomic_path, sha256_bytes, sha256_file
from saelib.io import check_tensors, read_json, read_tensors, tensor_bytes
from saelib.lm.model import LanguageModel
from saelib.lm.site import Site
from saelib.lm.sources import cache_dir
from saelib.probing.layers import Features, pooled_features, probe_layers
from saelib.probing.pooling import POOLINGS
from saelib.saes import SAE
from saelib.validation import check_int

FORMAT = 1
FILE = "features.safetensors"


def feature_key(model: str, texts: Sequence[str], site: Site, sae: SAE | None, max_tokens: int):
    """The sha256 naming one hook's pooled features (see the module docstring)."""
    weights = "none" if sae is None else sha256_bytes(tensor_bytes(sae.state_dict()))
    parts = {"format": FORMAT, "model": model, "site": site.to_dict(), "sae": weights}
    parts |= {"max_tokens": max_tokens, "texts": sha256_bytes(json.dumps(list(texts)))}
    return sha256_bytes(json.dumps(parts, sort_keys=True)), parts


def _shapes(n: int, d_model: int, d_sae: int | None) -> dict[str, tuple[int, int]]:
    shapes = {f"x_{how}": (n, d_model) for how in POOLINGS}
    if d_sae is not None:
        shapes |= {f"f_{how}": (n, d_sae) for how in POOLINGS}
    return shapes


def save_features(directory: Path, feats: Mapping[str, dict[str, Tensor]], parts: dict) -> None:
    """Write one hook's ``{pooling: {"x", "f"}}`` features and their manifest, atomically."""
    tensors = {f"{kind}_{how}": t for how, kinds in feats.items() for kind, t in kinds.items()}
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        (tmp / FILE).write_bytes(tensor_bytes(tensors))
        shapes = {name: list(t.shape) for name, t in tensors.items()}
        manifest = parts | {"sha256": sha256_file(tmp / FILE), "shapes": shapes}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def load_features(directory: Path, parts: dict) -> dict[str, dict[str, Tensor]]:
    """One hook's features from ``directory``, checked against ``parts`` and the sha256."""
    manifest = read_json(directory / "manifest.json")
    wrong = sorted(k for k, v in parts.items() if manifest.get(k) != v)
    if wrong:
        raise ValueError(f"{directory}: manifest differs from the request in {wrong}")
    path = directory / FILE
    if not path.is_file() or sha256_file(path) != manifest.get("sha256"):
        raise ValueError(f"{path}: missing or does not match its manifest sha256; delete it")
    tensors = read_tensors(path)
    check_tensors(path, tensors, {k: tuple(v) for k, v in manifest["shapes"].items()})
    out: dict[str, dict[str, Tensor]] = {}
    for name, t in tensors.items():
        kind, how = name.split("_", 1)
        out.setdefault(how, {})[kind] = t
    return out


def cached_features(
    lm: LanguageModel,
    texts: Sequence[str],
    sites: Sequence[Site],
    saes: Mapping[str, SAE] | None = None,
    max_tokens: int = 64,
    root: str | Path | None = None,
    progress: bool = True,
) -> Features:
    """:func:`~saelib.probing.layers.pooled_features`, read from the cache where present.

    Hooks whose features are cached are read (and verified); the others are computed in
    one pass up to the deepest of them and written. ``root`` defaults to
    ``cache_dir() / "probing_features"``. A damaged file raises (it is not recomputed
    silently); delete its folder to recompute.
    """
    saes = saes or {}
    root = Path(root) if root is not None else cache_dir() / "probing_features"
    keys = {s.hook: feature_key(lm.name, texts, s, saes.get(s.hook), max_tokens) for s in sites}
    out: Features = {}
    todo = []
    for site in sites:
        key, parts = keys[site.hook]
        if (root / key[:32]).is_dir():
            for how, kinds in load_features(root / key[:32], parts).items():
                out[(site.hook, how)] = kinds
        else:
            todo.append(site)
    if todo:
        fresh = pooled_features(lm, texts, todo, saes, max_tokens=max_tokens, progress=progress)
        for site in todo:
            key, parts = keys[site.hook]
            by_pooling = {how: fresh[(site.hook, how)] for how in POOLINGS}
            save_features(root / key[:32], by_pooling, parts)
            out |= {(site.hook, how): kinds for how, kinds in by_pooling.items()}
    return {(s.hook, how): out[(s.hook, how)] for s in sites for how in POOLINGS}


def probe_cached(
    tasks,
    lm: LanguageModel,
    texts: Sequence[str],
    sites: Sequence[Site],
    saes: Mapping[str, SAE] | None = None,
    max_tokens: int = 64,
    layers_per_pass: int = 4,
    root: str | Path | None = None,
    **probe_kwargs,
) -> pd.DataFrame:
    """:func:`~saelib.probing.layers.probe_layers` at every site, from cached features.

    The sites are taken ``layers_per_pass`` at a time: only their features are in memory,
    each ``len(texts) x (d_model + d_sae) x 8`` bytes (two poolings of float32), at the cost
    of one model pass per group when they are not cached yet. ``texts``: every text of
    ``tasks``, the rows of the features. ``probe_kwargs`` go to ``probe_layers``
    (``ks``, ``Cs``, ``n_components``, ``seed``, ``progress``, ``scores``). The rows do not
    depend on ``layers_per_pass``; their order does (by pass, then task, hook, pooling).
    """
    check_int("layers_per_pass", layers_per_pass, low=1)
    text_index = {text: i for i, text in enumerate(texts)}
    tables = []
    for start in range(0, len(sites), layers_per_pass):
        group = sites[start : start + layers_per_pass]
        codes = {s.hook: saes[s.hook] for s in group if s.hook in (saes or {})}
        progress = probe_kwargs.get("progress", True)
        features = cached_features(lm, texts, group, codes, max_tokens, root, progress)
        tables.append(probe_layers(tasks, features, text_index, **probe_kwargs))
        del features  # before the next group's are made
    return pd.concat(tables, ignore_index=True)


__all__ = ["cached_features", "feature_key", "load_features", "probe_cached", "save_features"]
