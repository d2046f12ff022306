"""Probes on activations and SAE codes: dense baselines, k-sparse SAE probes, the quiver.

After Kantamneni et al., "Are Sparse Autoencoders Useful? A Case Study in Sparse Probing"
(2025): per binary task, several probing methods are fit on a group-wise train split, their
regularisation is chosen on a validation split, and they are judged by test AUC.

- ``dense``: logistic regression on the (standardised) activation ``x [n, d_in]``.
- ``pca{n}``: PCA of the raw activation to ``n`` components (fit on train), then
  logistic regression.
- ``sae_k{k}``: rank SAE latents by the absolute difference of class means of the codes
  ``f [n, d_sae]`` on train, keep the top ``k``, logistic regression on those.
- The *quiver of arrows*: per task, the method with the best validation AUC, judged on test;
  with or without the SAE probes among the candidates.

Nothing here knows about language models: inputs are arrays (numpy or torch) of pooled
activations or codes (see :func:`pool`), binary labels ``y [n]`` and groups ``[n]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64, 128)


def _array(x, name: str, ndim: int) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    if x.dtype.kind in "fc" and not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite (it has NaN or inf)")
    return x


def _labels(y, n: int | None = None, name: str = "y") -> np.ndarray:
    y = _array(y, name, 1)
    if n is not None and len(y) != n:
        raise ValueError(f"{name} must have one label per row ({n}), got {len(y)}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name} must hold binary labels 0 and 1, got values {np.unique(y)[:5]}")
    if len(np.unique(y)) < 2:
        raise ValueError(f"{name} must contain both classes 0 and 1")
    return y.astype(np.int64)


# --- pooling -------------------------------------------------------------------------------


def pool(acts, mask, how: str = "mean"):
    """Pool ``acts [n, T, d]`` over the tokens where ``mask [n, T]`` is 1: ``[n, d]``.

    ``how="last"`` takes each row's last unmasked token, ``how="mean"`` their mean. Accepts
    and returns torch tensors or numpy arrays.
    """
    if how not in ("last", "mean"):
        raise ValueError(f"how must be 'last' or 'mean', got {how!r}")
    is_torch = hasattr(acts, "detach")
    a = _array(acts, "acts", 3)
    m = _array(mask, "mask", 2).astype(bool)
    if m.shape != a.shape[:2]:
        raise ValueError(f"mask must have shape {a.shape[:2]} (acts' [n, T]), got {m.shape}")
    if not m.any(axis=1).all():
        raise ValueError("mask must select at least one token in every row")
    if how == "mean":
        out = (a * m[..., None]).sum(1) / m.sum(1, keepdims=True)
    else:
        last = a.shape[1] - 1 - np.argmax(m[:, ::-1], axis=1)
        out = a[np.arange(a.shape[0]), last]
    if is_torch:
        import torch

        return torch.from_numpy(np.ascontiguousarray(out)).to(acts.dtype)
    return out


# --- split ---------------------------------------------------------------------------------


def group_split(y, groups, n_folds: int = 5, seed: int = 0):
    """Indices ``(train, val, test)``: no group in two of them, classes balanced across them.

    Uses scikit-learn's ``StratifiedGroupKFold(n_folds, shuffle=True)``: test is one fold,
    validation another, train the rest (60/20/20 for 5 folds, up to group sizes).
    """
    y = _labels(y)
    groups = _array(groups, "groups", 1)
    if len(groups) != len(y):
        raise ValueError(f"groups must have one entry per label ({len(y)}), got {len(groups)}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 3:
        raise ValueError(f"n_folds must be an integer >= 3, got {n_folds!r}")
    for c in (0, 1):
        if len(np.unique(groups[y == c])) < n_folds:
            raise ValueError(
                f"groups must hold at least n_folds={n_folds} groups per class to split "
                f"group-wise; class {c} has {len(np.unique(groups[y == c]))}"
            )
    folds = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for i, (_, idx) in enumerate(folds.split(np.zeros(len(y)), y, groups)):
        fold_of[idx] = i
    test, val = np.flatnonzero(fold_of == 0), np.flatnonzero(fold_of == 1)
    train = np.flatnonzero(fold_of >= 2)
    for name, idx in (("train", train), ("val", val), ("test", test)):
        if len(np.unique(y[idx])) < 2:
            raise ValueError(f"the {name} split has one class only: use fewer n_folds")
    return train, val, test


# --- probes --------------------------------------------------------------------------------


@dataclass
class ProbeFit:
    """A fitted probe: ``model`` maps the selected columns ``features`` to a score."""

    method: str
    model: object  # a fitted scikit-learn classifier or pipeline
    features: np.ndarray | None  # [k] selected columns, or None for all
    C: float
    val_auc: float

    def scores(self, x) -> np.ndarray:
        """Decision scores ``[n]`` for ``x [n, d]`` (the same columns as at fit)."""
        x = _array(x, "x", 2)
        if self.features is not None:
            x = x[:, self.features]
        return self.model.decision_function(x)

    def evaluate(self, x, y) -> dict[str, float]:
        """``{"auc", "accuracy"}`` on ``x [n, d]``, ``y [n]`` (accuracy at score 0)."""
        s = self.scores(x)
        y = _labels(y, len(s))
        return {"auc": float(roc_auc_score(y, s)), "accuracy": float(accuracy_score(y, s > 0))}


def _fit_best_c(make, x_tr, y_tr, x_val, y_val, Cs):
    """The model (from ``make(C)``) with the best validation AUC over ``Cs``; first wins ties."""
    best = None
    for C in Cs:
        model = make(C).fit(x_tr, y_tr)
        auc = float(roc_auc_score(y_val, model.decision_function(x_val)))
        if best is None or auc > best[2]:
            best = (model, C, auc)
    return best


def _logreg(C: float, seed: int):
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed)
    )


def _check_fit(x_tr, y_tr, x_val, y_val, Cs):
    x_tr, x_val = _array(x_tr, "x_train", 2), _array(x_val, "x_val", 2)
    if x_tr.shape[1] != x_val.shape[1]:
        raise ValueError(
            f"x_val must have {x_tr.shape[1]} columns like x_train, got {x_val.shape[1]}"
        )
    y_tr, y_val = _labels(y_tr, len(x_tr), "y_train"), _labels(y_val, len(x_val), "y_val")
    if len(Cs) == 0 or not all(isinstance(c, (int, float)) and c > 0 for c in Cs):
        raise ValueError(f"Cs must be a non-empty sequence of positive numbers, got {Cs!r}")
    return x_tr, y_tr, x_val, y_val


def dense_probe(x_train, y_train, x_val, y_val, Cs=DEFAULT_CS, seed: int = 0) -> ProbeFit:
    """Logistic regression on standardised ``x [n, d]``, its inverse penalty ``C`` chosen
    on validation AUC among ``Cs``."""
    x_tr, y_tr, x_val, y_val = _check_fit(x_train, y_train, x_val, y_val, Cs)
    model, C, auc = _fit_best_c(lambda c: _logreg(c, seed), x_tr, y_tr, x_val, y_val, Cs)
    return ProbeFit("dense", model, None, C, auc)


def pca_probe(
    x_train, y_train, x_val, y_val, n_components: int = 32, Cs=DEFAULT_CS, seed: int = 0
) -> ProbeFit:
    """PCA of the raw ``x`` to ``n_components`` (fit on the training rows), then logistic
    regression on the standardised components, ``C`` chosen on validation."""
    x_tr, y_tr, x_val, y_val = _check_fit(x_train, y_train, x_val, y_val, Cs)
    limit = min(x_tr.shape)
    if isinstance(n_components, bool) or not isinstance(n_components, int):
        raise ValueError(f"n_components must be an integer in [1, {limit}], got {n_components!r}")
    if not 1 <= n_components <= limit:
        raise ValueError(f"n_components must be an integer in [1, {limit}], got {n_components}")

    def make(C):
        # PCA on the raw (centred) activation: standardising first would erase the
        # variance structure PCA is meant to find
        return make_pipeline(PCA(n_components, random_state=seed), _logreg(C, seed))

    model, C, auc = _fit_best_c(make, x_tr, y_tr, x_val, y_val, Cs)
    return ProbeFit(f"pca{n_components}", model, None, C, auc)


def rank_latents(f_train, y_train) -> np.ndarray:
    """Latent indices ``[d_sae]`` by decreasing |mean(f | y=1) - mean(f | y=0)| on train.

    Ties keep the lower index first (a stable sort), so the ranking is deterministic.
    """
    f = _array(f_train, "f_train", 2).astype(np.float64)
    y = _labels(y_train, len(f), "y_train")
    diff = np.abs(f[y == 1].mean(0) - f[y == 0].mean(0))
    return np.argsort(-diff, kind="stable")


def sparse_probes(
    f_train, y_train, f_val, y_val, ks=DEFAULT_KS, Cs=DEFAULT_CS, seed: int = 0
) -> list[ProbeFit]:
    """One k-sparse SAE probe per ``k``: logistic regression on the top-``k`` latents of
    :func:`rank_latents` (ks larger than ``d_sae`` are dropped)."""
    f_tr, y_tr, f_val, y_val = _check_fit(f_train, y_train, f_val, y_val, Cs)
    if len(ks) == 0 or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks
    ):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    order = rank_latents(f_tr, y_tr)
    fits = []
    for k in sorted(set(k for k in ks if k <= f_tr.shape[1])):
        cols = np.sort(order[:k])
        model, C, auc = _fit_best_c(
            lambda c: _logreg(c, seed), f_tr[:, cols], y_tr, f_val[:, cols], y_val, Cs
        )
        fits.append(ProbeFit(f"sae_k{k}", model, cols, C, auc))
    return fits


# --- one task, all methods; the quiver -------------------------------------------------------


def probe_task(
    x,
    y,
    groups,
    f=None,
    split=None,
    n_components: int = 32,
    ks=DEFAULT_KS,
    Cs=DEFAULT_CS,
    seed: int = 0,
) -> list[dict]:
    """Every method on one task: rows ``{"method", "C", "val_auc", "test_auc", "test_accuracy"}``.

    ``x [n, d_in]`` activations, ``f [n, d_sae]`` SAE codes of the same rows (optional),
    ``split`` = ``(train, val, test)`` indices (default: :func:`group_split` with ``seed``).
    """
    x = _array(x, "x", 2)
    y = _labels(y, len(x))
    train, val, test = split if split is not None else group_split(y, groups, seed=seed)
    fits = [(dense_probe(x[train], y[train], x[val], y[val], Cs, seed), x)]
    n_pca = min(n_components, len(train), x.shape[1])
    fits.append((pca_probe(x[train], y[train], x[val], y[val], n_pca, Cs, seed), x))
    if f is not None:
        f = _array(f, "f", 2)
        if len(f) != len(x):
            raise ValueError(f"f must have one row per row of x ({len(x)}), got {len(f)}")
        fits += [(p, f) for p in sparse_probes(f[train], y[train], f[val], y[val], ks, Cs, seed)]
    rows = []
    for fit, data in fits:
        ev = fit.evaluate(data[test], y[test])
        rows.append(
            {
                "method": fit.method,
                "C": fit.C,
                "val_auc": fit.val_auc,
                "test_auc": ev["auc"],
                "test_accuracy": ev["accuracy"],
            }
        )
    return rows


def quiver(rows: list[dict], with_sae: bool = True) -> dict:
    """The validation-best method among ``rows`` (from :func:`probe_task`), judged on test.

    ``with_sae=False`` leaves out the ``sae_k*`` methods. Ties go to the earlier row.
    Returns the chosen row.
    """
    candidates = [r for r in rows if with_sae or not r["method"].startswith("sae_")]
    if not candidates:
        raise ValueError(
            "rows must hold at least one candidate method"
            + ("" if with_sae else " that is not an SAE probe")
        )
    return max(candidates, key=lambda r: r["val_auc"])
