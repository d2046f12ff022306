"""Probing tasks at many layers of a language model: features, probes, the two protocols.

    feats = pooled_features(lm, texts, hooks, encoders={hook: sae_codes(sae, scale)})
    table = probe_layers(tasks, feats, text_index)            # one row per task/layer/method
    fixed, per_task = quivers(table)                          # the two protocols

The *fixed-layer* protocol (Kantamneni et al. 2025) probes every task at one layer; the
*per-task* protocol lets each task pick its layer (and pooling, and method) on validation
data, as the objection in ``shared/seeds/001`` asks. Both choose on validation AUC and are
judged on test AUC, with and without the k-sparse SAE probes among the candidates.

A feature table maps ``(hook, pooling)`` to ``{"x": [n_texts, d_model], "f": [n_texts,
d_sae]}``: the residual stream pooled over each text's tokens, and the SAE codes of every
token pooled the same way (codes are pooled, not the activation before coding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saelib.lm.model import LanguageModel, hook_layer
from saelib.probing.probes import DEFAULT_CS, DEFAULT_KS, group_split, probe_task, sparse_probes
from saelib.probing.probes import dense_probe as fit_dense
from saelib.progress import progress_bar

POOLINGS = ("last", "mean")


def sae_codes(sae, scale: float) -> Callable[[Tensor], Tensor]:
    """``x [n, d_model] -> f [n, d_sae]``: the SAE's codes of activations in its training unit."""
    return lambda x: sae.encode(x * scale)


def _pool(a: Tensor, keep: Tensor) -> dict[str, Tensor]:
    """``a [b, T, d]`` over the positions ``keep [b, T]`` -> ``{"last", "mean"}`` of ``[b, d]``."""
    pos = torch.arange(a.shape[1], device=a.device)
    last = torch.where(keep, pos, -1).max(1).values  # [b]
    mean = (a * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    return {"last": a[torch.arange(a.shape[0], device=a.device), last], "mean": mean}


def _positions(a: Tensor, lengths: Tensor, skip_first: int, max_norm: float | None) -> Tensor:
    """Tokens to pool ``[b, T]``: real ones from ``skip_first`` on, none above ``max_norm``.

    A text with no such token (one token long, or only outliers) keeps all its tokens.
    """
    pos = torch.arange(a.shape[1], device=a.device)[None]
    real = pos < lengths[:, None]
    keep = real & (pos >= skip_first)
    if max_norm is not None:
        keep &= a.norm(dim=-1) <= max_norm
    return torch.where(keep.any(1, keepdim=True), keep, real)


@torch.no_grad()
def pooled_features(
    lm: LanguageModel,
    texts: Sequence[str],
    hooks: Sequence[str],
    encoders: dict[str, Callable[[Tensor], Tensor]] | None = None,
    max_tokens: int = 64,
    batch_size: int = 32,
    skip_first: int = 1,
    max_norm: dict[str, float] | None = None,
    progress: bool = True,
) -> dict[tuple[str, str], dict[str, Tensor]]:
    """Pooled residual stream (and pooled SAE codes) of each text at each hook.

    Texts are truncated to ``max_tokens`` tokens, sorted by length into right-padded
    batches (causal attention: padding after a token cannot change it), and run once up
    to the deepest hook. ``mean`` averages the tokens from position ``skip_first`` on
    (SmolLM2's first position is an attention sink whose norm is ~100x the others'), ``last``
    takes the last of them; ``max_norm[hook]`` leaves out the tokens whose activation norm
    is above it (the sinks deeper in a text; see ``saelib.lm.sweep.norm_limit``). A text
    with no token left keeps all of its tokens. ``encoders[hook]`` maps ``[n, d_model]``
    activations to codes.
    Returns ``{(hook, pooling): {"x": [n, d_model], "f": [n, d_sae]}}`` on the CPU, in
    the order of ``texts`` (``"f"`` only for hooks with an encoder).
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
        raise ValueError(f"max_tokens must be an integer >= 2, got {max_tokens!r}")
    if isinstance(skip_first, bool) or not isinstance(skip_first, int) or skip_first < 0:
        raise ValueError(f"skip_first must be an integer >= 0, got {skip_first!r}")
    if not hooks:
        raise ValueError("hooks must name at least one hook")
    encoders = encoders or {}
    for name, given in (("encoders", encoders), ("max_norm", max_norm or {})):
        unknown = sorted(set(given) - set(hooks))
        if unknown:
            raise ValueError(f"{name} has hooks {unknown} that are not in hooks {list(hooks)}")
    ids = [row[:max_tokens] for row in lm.tokenize(list(texts))]
    empty = [i for i, row in enumerate(ids) if not row]
    if empty:
        raise ValueError(f"texts {empty[:5]} have no tokens")
    max_norm = max_norm or {}
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    stop = max(hook_layer(h) for h in hooks) + 1
    parts: dict[tuple[str, str], dict[str, list[Tensor]]] = {}
    bar = progress_bar(progress, total=len(ids), desc="probing texts", unit="text")
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        lengths = torch.tensor([len(ids[i]) for i in batch], device=lm.device)
        tokens = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)
        for row, i in enumerate(batch):
            tokens[row, : len(ids[i])] = torch.tensor(ids[i])
        _, cache = lm.bridge.run_with_cache(
            tokens.to(lm.device), names_filter=list(hooks), stop_at_layer=stop
        )
        for hook in hooks:
            a = cache[hook].float()  # [b, T, d_model]
            keep = _positions(a, lengths, skip_first, max_norm.get(hook))
            pooled = {"x": _pool(a, keep)}
            if hook in encoders:
                f = encoders[hook](a.reshape(-1, a.shape[-1])).reshape(*a.shape[:2], -1)
                pooled["f"] = _pool(f, keep)
            for kind, by_pooling in pooled.items():
                for pooling, v in by_pooling.items():
                    parts.setdefault((hook, pooling), {}).setdefault(kind, []).append(v.cpu())
        bar.update(len(batch))
    bar.close()
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {
        key: {kind: torch.cat(chunks)[inverse] for kind, chunks in kinds.items()}
        for key, kinds in parts.items()
    }


def probe_layers(
    tasks,
    features: dict[tuple[str, str], dict[str, Tensor]],
    text_index: dict[str, int],
    ks: Sequence[int] = DEFAULT_KS,
    Cs: Sequence[float] = DEFAULT_CS,
    n_components: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Every method of :func:`saelib.probing.probes.probe_task` on every task, hook and pooling.

    ``tasks``: objects with ``name``, ``texts``, ``labels``, ``groups`` (``ProbingTask``);
    ``text_index`` maps a text to its row in ``features``. One group-wise split per task
    (seeded), shared by all hooks, poolings and methods. Rows: task, hook, layer, pooling,
    method, C, val_auc, test_auc, test_accuracy.
    """
    rows = []
    bar = progress_bar(progress, total=len(tasks) * len(features), desc="probes", unit="fit")
    for task in tasks:
        idx = torch.tensor([text_index[t] for t in task.texts])
        split = group_split(task.labels, task.groups, seed=seed)
        for (hook, pooling), feats in features.items():
            f = feats["f"][idx] if "f" in feats else None
            fits = probe_task(
                feats["x"][idx], task.labels, task.groups, f, split, n_components, ks, Cs, seed
            )
            where = {"task": task.name, "hook": hook, "layer": hook_layer(hook)}
            rows += [where | {"pooling": pooling} | r for r in fits]
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def _best(rows: pd.DataFrame) -> pd.Series:
    """The validation-best row; ties go to the first (as ``saelib.probing.probes.quiver``)."""
    return rows.loc[rows["val_auc"].idxmax()]


def is_sae(method: pd.Series) -> pd.Series:
    return method.str.startswith("sae_")


def choose_fixed_layer(table: pd.DataFrame) -> int:
    """The one layer for all tasks: best mean (over tasks) validation AUC of the dense
    methods' quiver, i.e. chosen without test data and without the SAE probes."""
    dense = table[~is_sae(table["method"])]
    per_task = dense.groupby(["layer", "task"])["val_auc"].max()
    return int(per_task.groupby("layer").mean().idxmax())


def quivers(table: pd.DataFrame, fixed_layer: int | None = None) -> pd.DataFrame:
    """Per task, the quiver's choice under both protocols, with and without SAE probes.

    Rows: task, protocol (``fixed layer`` / ``per-task layer``), candidates (``with SAE`` /
    ``without SAE``), and the chosen row's layer, pooling, method, val_auc, test_auc.
    ``fixed_layer`` defaults to :func:`choose_fixed_layer`.
    """
    layers = sorted(table["layer"].unique())
    if fixed_layer is None:
        fixed_layer = choose_fixed_layer(table)
    elif fixed_layer not in layers:
        raise ValueError(
            f"fixed_layer must be one of the probed layers {layers}, got {fixed_layer}"
        )
    out = []
    for task, rows in table.groupby("task", sort=False):
        for protocol, cand in (
            ("fixed layer", rows[rows["layer"] == fixed_layer]),
            ("per-task layer", rows),
        ):
            for label, keep in (("with SAE", cand), ("without SAE", cand[~is_sae(cand["method"])])):
                best = _best(keep)
                cols = ["layer", "pooling", "method", "val_auc", "test_auc"]
                out.append(
                    {"task": task, "protocol": protocol, "candidates": label} | best[cols].to_dict()
                )
    return pd.DataFrame(out)


def scarce_probes(
    tasks,
    features: dict[tuple[str, str], dict[str, Tensor]],
    text_index: dict[str, int],
    sizes: Sequence[int],
    n_draws: int = 3,
    ks: Sequence[int] = (1, 4, 16),
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """The data-scarce regime: dense and k-sparse SAE probes on ``n`` training examples.

    For each task, the same group-wise split as :func:`probe_layers`; its training part
    is subsampled to ``n`` examples (``n // 2`` per class, ``n_draws`` seeded draws per
    size); validation (choice of C) and test stay whole, so every method is chosen and
    judged alike. Rows: task, hook, layer, pooling, n_train, draw, method, val_auc, test_auc.
    """
    bad = [n for n in sizes if isinstance(n, bool) or not isinstance(n, int) or n < 4 or n % 2]
    if not sizes or bad:
        raise ValueError(f"sizes must be even integers >= 4, got {list(sizes)}")
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
                for (hook, pooling), feats in features.items():
                    x = feats["x"][idx].numpy()
                    fits = [(fit_dense(x[sub], y[sub], x[val], y[val], Cs, seed), x)]
                    if "f" in feats:
                        f = feats["f"][idx].numpy()
                        fits += [
                            (p, f)
                            for p in sparse_probes(f[sub], y[sub], f[val], y[val], ks, Cs, seed)
                        ]
                    where = {"task": task.name, "hook": hook, "layer": hook_layer(hook)}
                    where |= {"pooling": pooling, "n_train": n, "draw": draw}
                    for fit, data in fits:
                        auc = fit.evaluate(data[test], y[test])["auc"]
                        rows.append(
                            where | {"method": fit.method, "val_auc": fit.val_auc, "test_auc": auc}
                        )
                    bar.update()
    bar.close()
    return pd.DataFrame(rows)
