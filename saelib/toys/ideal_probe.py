"""Probing on ground truth: what a perfect SAE would give a prober, and a trained SAE's shortfall.

Till (comment on "Takeaways from our recent work on SAE probing", ``shared/seeds`` 001) asks
how an *ideal* SAE, one latent per true feature, would fare at k-sparse probing. On ground
truth the ideal SAE exists: its codes are the true codes. Labels are built from the true
features, and the same probes (``saelib.probing.probes``: logistic regression, its ``C``
chosen on validation AUC; k-sparse probes on the top-k latents by class-mean difference) run
on the true codes, on an SAE's latents and, densely, on the activations ``x``:

- ``feature_labels``: "feature j fires", one label per feature;
- ``any_of_labels``: "any of these features fires", a concept made of several features,
  which a 1-sparse probe on even the ideal SAE cannot express.

``probe_coders`` returns one row per (label, coder, probe) with the test AUC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from torch import Tensor

from saelib.probing.probes import DEFAULT_CS, dense_probe, sparse_probes
from saelib.validation import check_int, require

__all__ = ["any_of_labels", "feature_labels", "probe_coders", "random_split"]


def feature_labels(codes: Tensor, features: Sequence[int]) -> dict[str, np.ndarray]:
    """``{"feature j": y [n]}``: 1 where true feature ``j`` fires in ``codes [n, n_true]``."""
    require(codes.ndim == 2, "codes", list(codes.shape), "[n, n_true]")
    n_true = codes.shape[1]
    bad = [j for j in features if not 0 <= int(j) < n_true]
    require(not bad, "features", bad, f"indices in [0, {n_true})")
    active = (codes != 0).cpu().numpy()
    return {f"feature {int(j)}": active[:, int(j)].astype(np.int64) for j in features}


def any_of_labels(codes: Tensor, groups: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """``{"any of i+j+...": y [n]}``: 1 where any feature of the group fires."""
    require(codes.ndim == 2, "codes", list(codes.shape), "[n, n_true]")
    active = (codes != 0).cpu().numpy()
    labels = {}
    for group in groups:
        group = [int(j) for j in group]
        require(len(group) >= 1 and all(0 <= j < codes.shape[1] for j in group), "group", group,
                f"non-empty, indices in [0, {codes.shape[1]})")  # fmt: skip
        labels["any of " + "+".join(map(str, group))] = active[:, group].any(1).astype(np.int64)
    return labels


def random_split(n: int, seed: int, shares: tuple[float, float] = (0.6, 0.2)):
    """Indices ``(train, val, test)`` of ``n`` samples, shuffled by ``seed``: 60/20/20."""
    check_int("n", n, 5)
    order = np.random.default_rng(seed).permutation(n)
    a, b = int(shares[0] * n), int((shares[0] + shares[1]) * n)
    return order[:a], order[a:b], order[b:]


def _auc_rows(fits, data, y, test, **labels) -> list[dict]:
    rows = []
    for fit in fits:
        k = len(fit.features) if fit.features is not None else None
        rows.append({**labels, "probe": fit.method, "k": k,
                     "test_auc": fit.evaluate(data[test], y[test])["auc"]})  # fmt: skip
    return rows


def probe_coders(
    x: Tensor,
    coders: Mapping[str, Tensor],
    labels: Mapping[str, np.ndarray],
    *,
    ks: Sequence[int] = (1,),
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    dense: bool = True,
) -> pd.DataFrame:
    """Test AUC of every probe on every coder for every label.

    ``x [n, d]`` the activations (the dense probe's input, with ``dense``); ``coders`` maps
    a name (e.g. ``"ideal"``, ``"TopK"``) to codes ``[n, m]`` of the same samples;
    ``labels`` maps a label name to ``y [n]`` in {0, 1}. One split (:func:`random_split`
    with ``seed``) for all. Labels with fewer than 3 positives or negatives in any part of
    the split are skipped. Rows: ``label``, ``coder`` (``"dense"`` for the probe on x),
    ``probe`` (``dense`` or ``sae_k{k}``), ``k`` (None for dense), ``test_auc``.
    """
    require(x.ndim == 2, "x", list(x.shape), "[n, d]")
    n = x.shape[0]
    for name, codes in coders.items():
        require(codes.ndim == 2 and codes.shape[0] == n, f"coders[{name!r}]",
                list(codes.shape), f"[{n}, m]")  # fmt: skip
    train, val, test = random_split(n, seed)
    xs = x.detach().cpu().double().numpy()
    fs = {name: c.detach().cpu().double().numpy() for name, c in coders.items()}
    rows: list[dict] = []
    for label, y in labels.items():
        y = np.asarray(y)
        require(y.shape == (n,), f"labels[{label!r}]", list(y.shape), f"[{n}]")
        positives = [int(y[idx].sum()) for idx in (train, val, test)]
        negatives = [len(idx) - int(y[idx].sum()) for idx in (train, val, test)]
        if min(positives + negatives) < 3:
            continue
        if dense:
            fit = dense_probe(xs[train], y[train], xs[val], y[val], Cs, seed)
            rows += _auc_rows([fit], xs, y, test, label=label, coder="dense")
        for name, f in fs.items():
            fits = sparse_probes(f[train], y[train], f[val], y[val], ks, Cs, seed)
            rows += _auc_rows(fits, f, y, test, label=label, coder=name)
    return pd.DataFrame(rows, columns=["label", "coder", "probe", "k", "test_auc"])
