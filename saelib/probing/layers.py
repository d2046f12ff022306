"""Probing tasks at many layers of a language model: pooled features, then probes.

    feats = pooled_features(lm, texts, sites, saes={site.hook: sae})   # one pass per group
    table = probe_layers(tasks, feats, text_index)   # one row per task/hook/pooling/method
    scarce = scarce_probes(tasks, feats, text_index, sizes=[8, 16, 32])

Each hook is probed through a :class:`saelib.lm.site.Site`, the record of the SAE trained
there: its ``skip_first`` and ``max_norm`` decide which tokens are pooled, its ``prepare``
puts activations into the SAE's input unit. The protocols that choose among the rows are in
:mod:`saelib.probing.protocols`.

A feature table maps ``(hook, pooling)`` to ``{"x": [n_texts, d_model], "f": [n_texts,
d_sae]}``: the residual stream pooled over each text's tokens, and the SAE codes of every
token pooled the same way (codes are pooled, not the activation before coding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saelib.lm.model import LanguageModel, hook_layer
from saelib.lm.residual import residual_activations
from saelib.lm.site import Site
from saelib.probing.pooling import POOLINGS, Pooling, pool, token_mask
from saelib.probing.probes import DEFAULT_CS, DEFAULT_KS, group_split, probe_task, sparse_probes
from saelib.probing.probes import dense_probe as fit_dense
from saelib.progress import progress_bar
from saelib.saes import SAE, inference
from saelib.validation import check_choice, check_int, is_int, require

Features = dict[tuple[str, Pooling], dict[str, Tensor]]


def _check_sites(lm: LanguageModel, sites: Sequence[Site], saes: Mapping[str, SAE]) -> None:
    hooks = [site.hook for site in sites]
    require(len(hooks) > 0, "sites", list(sites), "at least one Site")
    require(len(set(hooks)) == len(hooks), "sites (hooks)", hooks, "one Site per hook")
    models = sorted({site.model for site in sites} - {lm.name})
    require(not models, "sites (models)", models, f"the probed model {lm.name!r}")
    unknown = sorted(set(saes) - set(hooks))
    require(not unknown, "saes (hooks)", unknown, f"among the sites' hooks {hooks}")


def _padded(ids: list[list[int]], batch: list[int], device) -> tuple[Tensor, Tensor]:
    """Right-padded ``tokens [b, T]`` of the texts ``batch`` and their ``lengths [b]``."""
    lengths = torch.tensor([len(ids[i]) for i in batch], device=device)
    tokens = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)
    for row, i in enumerate(batch):
        tokens[row, : len(ids[i])] = torch.tensor(ids[i])
    return tokens.to(device), lengths


def _pooled(a: Tensor, keep: Tensor, sae: SAE | None, site: Site) -> dict[str, dict[str, Tensor]]:
    """``{"x": {pooling: [b, d]}, "f": ...}`` of ``a [b, T, d]`` (``"f"`` when ``sae``)."""
    out = {"x": {how: pool(a, keep, how) for how in POOLINGS}}
    if sae is not None:
        with inference(sae):
            f = sae.encode(site.prepare(a.reshape(-1, a.shape[-1]))).reshape(*a.shape[:2], -1)
        out["f"] = {how: pool(f, keep, how) for how in POOLINGS}
    return out


@torch.no_grad()
def pooled_features(
    lm: LanguageModel,
    texts: Sequence[str],
    sites: Sequence[Site],
    saes: Mapping[str, SAE] | None = None,
    max_tokens: int = 64,
    batch_size: int = 32,
    progress: bool = True,
) -> Features:
    """Pooled residual stream (and pooled SAE codes) of each text at each site's hook.

    Texts are truncated to ``max_tokens`` tokens, sorted by length into right-padded
    batches (causal attention: padding after a token cannot change it), and run once up
    to the deepest hook. At each site, ``mean`` averages the tokens from ``site.skip_first``
    on (SmolLM2's first position is an attention sink whose norm is ~100x the others'),
    ``last`` takes the last of them; tokens whose raw norm is above ``site.max_norm`` are
    left out (the sinks deeper in a text); see :func:`saelib.probing.pooling.token_mask`.
    ``saes[hook]`` codes every token in its input unit (``site.prepare``).
    Returns ``{(hook, pooling): {"x": [n, d_model], "f": [n, d_sae]}}`` on the CPU, in
    the order of ``texts`` (``"f"`` only for hooks with an SAE).
    """
    check_int("max_tokens", max_tokens, low=2)
    saes = saes or {}
    _check_sites(lm, sites, saes)
    ids = [row[:max_tokens] for row in lm.tokenize(list(texts))]
    empty = [i for i, row in enumerate(ids) if not row]
    require(not empty, "texts (indices without tokens)", empty[:5], "none")
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    # Each batch's rows are written into tables allocated once: a list of per-batch
    # chunks joined at the end fragmented the heap (8 GB resident for 1 GB of features).
    out: Features = {}
    bar = progress_bar(progress, total=len(ids), desc="probing texts", unit="text")
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        tokens, lengths = _padded(ids, batch, lm.device)
        cache = residual_activations(lm, tokens, [site.hook for site in sites])
        rows = torch.tensor(batch)
        for site in sites:
            a = cache[site.hook].float()  # [b, T, d_model]
            keep = token_mask(a, lengths, site)
            for kind, by_pooling in _pooled(a, keep, saes.get(site.hook), site).items():
                for how, v in by_pooling.items():
                    tables = out.setdefault((site.hook, how), {})
                    if kind not in tables:
                        tables[kind] = torch.empty(len(ids), v.shape[1], dtype=v.dtype)
                    tables[kind][rows] = v.cpu()
        bar.update(len(batch))
    bar.close()
    return out


def probe_layers(
    tasks,
    features: Features,
    text_index: dict[str, int],
    ks: Sequence[int] = DEFAULT_KS,
    Cs: Sequence[float] = DEFAULT_CS,
    n_components: int = 32,
    seed: int = 0,
    progress: bool = True,
    scores: bool = False,
) -> pd.DataFrame:
    """Every method of :func:`saelib.probing.probes.probe_task` on every task, hook and pooling.

    ``tasks``: objects with ``name``, ``texts``, ``labels``, ``groups`` (``ProbingTask``);
    ``text_index`` maps a text to its row in ``features``. One group-wise split per task
    (seeded), shared by all hooks, poolings and methods. Rows: task, hook, layer, pooling,
    method, C, val_auc, test_auc, test_accuracy (and ``val_scores`` with ``scores``).
    """
    rows = []
    bar = progress_bar(progress, total=len(tasks) * len(features), desc="probes", unit="fit")
    for task in tasks:
        idx = torch.tensor([text_index[t] for t in task.texts])
        split = group_split(task.labels, task.groups, seed=seed)
        for (hook, pooling), feats in features.items():
            f = feats["f"][idx] if "f" in feats else None
            fits = probe_task(
                feats["x"][idx],
                task.labels,
                task.groups,
                f,
                split,
                n_components,
                ks,
                Cs,
                seed,
                scores,
            )
            where = {"task": task.name, "hook": hook, "layer": hook_layer(hook)}
            rows += [where | {"pooling": pooling} | r for r in fits]
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def _scarce_fits(x, f, sub, val, test, y, ks, Cs, seed) -> list[dict]:
    """Dense and k-sparse probes trained on the rows ``sub``: method, val_auc, test_auc."""
    fits = [(fit_dense(x[sub], y[sub], x[val], y[val], Cs, seed), x)]
    if f is not None:
        fits += [(p, f) for p in sparse_probes(f[sub], y[sub], f[val], y[val], ks, Cs, seed)]
    return [
        {"method": fit.method, "val_auc": fit.val_auc}
        | {"test_auc": fit.evaluate(data[test], y[test])["auc"]}
        for fit, data in fits
    ]


def scarce_probes(
    tasks,
    features: Features,
    text_index: dict[str, int],
    sizes: Sequence[int],
    n_draws: int = 3,
    ks: Sequence[int] = (1, 4, 16),
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    pooling: Pooling | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The data-scarce regime: dense and k-sparse SAE probes on ``n`` training examples.

    For each task, the same group-wise split as :func:`probe_layers`; its training part
    is subsampled to ``n`` examples (``n // 2`` per class, ``n_draws`` seeded draws per
    size); validation (choice of C) and test stay whole, so every method is chosen and
    judged alike. ``pooling`` keeps the features of one pooling only (default: all).
    Rows: task, hook, layer, pooling, n_train, draw, method, val_auc, test_auc.
    """
    ok = len(sizes) > 0 and all(is_int(n) and n >= 4 and n % 2 == 0 for n in sizes)
    require(ok, "sizes", list(sizes), "even integers >= 4")
    check_int("n_draws", n_draws, low=1)
    if pooling is not None:
        check_choice("pooling", pooling, POOLINGS)
        features = {key: v for key, v in features.items() if key[1] == pooling}
    rows = []
    total = len(tasks) * len(features) * len(sizes) * n_draws
    bar = progress_bar(progress, total=total, desc="scarce probes", unit="fit")
    for task in tasks:
        idx = torch.tensor([text_index[t] for t in task.texts])
        y = task.labels
        train, val, test = group_split(y, task.groups, seed=seed)
        for draw in range(n_draws):
            rng = np.random.default_rng([seed, draw])
            by_class = [rng.permutation(train[y[train] == c]) for c in (0, 1)]
            for n in sizes:
                if n // 2 > min(len(c) for c in by_class):
                    continue  # not that many training examples in this task
                sub = np.sort(np.concatenate([c[: n // 2] for c in by_class]))
                for (hook, how), feats in features.items():
                    x = feats["x"][idx].numpy()
                    f = feats["f"][idx].numpy() if "f" in feats else None
                    where = {"task": task.name, "hook": hook, "layer": hook_layer(hook)}
                    where |= {"pooling": how, "n_train": n, "draw": draw}
                    fits = _scarce_fits(x, f, sub, val, test, y, ks, Cs, seed)
                    rows += [where | r for r in fits]
                    bar.update()
    bar.close()
    return pd.DataFrame(rows)
