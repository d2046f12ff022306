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
activations or codes (see :mod:`saelib.probing.pooling`), binary labels ``y [n]`` and
groups ``[n]``.
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

from saelib.validation import check_int, is_int, is_positive, require

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64, 128)


def _array(x, name: str, ndim: int) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    require(x.ndim == ndim, f"{name} (shape)", x.shape, f"{ndim}-dimensional")
    finite = x.dtype.kind not in "fc" or bool(np.isfinite(x).all())
    require(finite, name, "an array with NaN or inf", "finite")
    return x


def _labels(y, n: int | None = None, name: str = "y") -> np.ndarray:
    y = _array(y, name, 1)
    require(n is None or len(y) == n, f"{name} (labels)", len(y), f"one per row ({n})")
    values = np.unique(y)
    require(bool(np.isin(y, (0, 1)).all()), f"{name} (values)", values[:5].tolist(), "0 or 1")
    require(len(values) == 2, f"{name} (classes)", values.tolist(), "both 0 and 1")
    return y.astype(np.int64)


# --- split ---------------------------------------------------------------------------------


def group_split(y, groups, n_folds: int = 5, seed: int = 0):
    """Indices ``(train, val, test)``: no group in two of them, classes balanced across them.

    Uses scikit-learn's ``StratifiedGroupKFold(n_folds, shuffle=True)``: test is one fold,
    validation another, train the rest (60/20/20 for 5 folds, up to group sizes).
    """
    y = _labels(y)
    groups = _array(groups, "groups", 1)
    require(len(groups) == len(y), "groups (entries)", len(groups), f"one per label ({len(y)})")
    check_int("n_folds", n_folds, low=3)
    per_class = [len(np.unique(groups[y == c])) for c in (0, 1)]
    allowed = f"at least n_folds={n_folds} in each class to split group-wise"
    require(min(per_class) >= n_folds, "groups (per class 0, 1)", per_class, allowed)
    folds = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for i, (_, idx) in enumerate(folds.split(np.zeros(len(y)), y, groups)):
        fold_of[idx] = i
    test, val = np.flatnonzero(fold_of == 0), np.flatnonzero(fold_of == 1)
    train = np.flatnonzero(fold_of >= 2)
    for name, idx in (("train", train), ("val", val), ("test", test)):
        classes = np.unique(y[idx]).tolist()
        require(
            len(classes) == 2, f"the {name} split's classes", classes, "both (use fewer n_folds)"
        )
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


def fit_best_c(make, x_tr, y_tr, x_val, y_val, Cs):
    """``(model, C, val_auc)``: the model ``make(C).fit(x_tr, y_tr)`` with the best validation
    AUC over ``Cs``; the first wins ties."""
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
    columns = f"{x_tr.shape[1]} like x_train"
    require(x_tr.shape[1] == x_val.shape[1], "x_val (columns)", x_val.shape[1], columns)
    y_tr, y_val = _labels(y_tr, len(x_tr), "y_train"), _labels(y_val, len(x_val), "y_val")
    ok = len(Cs) > 0 and all(is_positive(c) for c in Cs)
    require(ok, "Cs", Cs, "a non-empty sequence of positive numbers")
    return x_tr, y_tr, x_val, y_val


def dense_probe(x_train, y_train, x_val, y_val, Cs=DEFAULT_CS, seed: int = 0) -> ProbeFit:
    """Logistic regression on standardised ``x [n, d]``, its inverse penalty ``C`` chosen
    on validation AUC among ``Cs``."""
    x_tr, y_tr, x_val, y_val = _check_fit(x_train, y_train, x_val, y_val, Cs)
    model, C, auc = fit_best_c(lambda c: _logreg(c, seed), x_tr, y_tr, x_val, y_val, Cs)
    return ProbeFit("dense", model, None, C, auc)


def pca_probe(
    x_train, y_train, x_val, y_val, n_components: int = 32, Cs=DEFAULT_CS, seed: int = 0
) -> ProbeFit:
    """PCA of the raw ``x`` to ``n_components`` (fit on the training rows), then logistic
    regression on the standardised components, ``C`` chosen on validation."""
    x_tr, y_tr, x_val, y_val = _check_fit(x_train, y_train, x_val, y_val, Cs)
    check_int("n_components", n_components, low=1, high=min(x_tr.shape))

    def make(C):
        # PCA on the raw (centred) activation: standardising first would erase the
        # variance structure PCA is meant to find
        return make_pipeline(PCA(n_components, random_state=seed), _logreg(C, seed))

    model, C, auc = fit_best_c(make, x_tr, y_tr, x_val, y_val, Cs)
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
    ok = len(ks) > 0 and all(is_int(k) and k >= 1 for k in ks)
    require(ok, "ks", ks, "a non-empty sequence of positive integers")
    order = rank_latents(f_tr, y_tr)
    fits = []
    for k in sorted(set(k for k in ks if k <= f_tr.shape[1])):
        cols = np.sort(order[:k])
        model, C, auc = fit_best_c(
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
    scores: bool = False,
) -> list[dict]:
    """Every method on one task: rows ``{"method", "C", "val_auc", "test_auc", "test_accuracy"}``.

    ``x [n, d_in]`` activations, ``f [n, d_sae]`` SAE codes of the same rows (optional),
    ``split`` = ``(train, val, test)`` indices (default: :func:`group_split` with ``seed``).
    ``scores=True`` adds each probe's decision scores on the validation rows and their
    labels (``val_scores``, ``val_labels`` ``[n_val]``, in the order of ``split[1]``).
    """
    x = _array(x, "x", 2)
    y = _labels(y, len(x))
    train, val, test = split if split is not None else group_split(y, groups, seed=seed)
    fits = [(dense_probe(x[train], y[train], x[val], y[val], Cs, seed), x)]
    n_pca = min(n_components, len(train), x.shape[1])
    fits.append((pca_probe(x[train], y[train], x[val], y[val], n_pca, Cs, seed), x))
    if f is not None:
        f = _array(f, "f", 2)
        require(len(f) == len(x), "f (rows)", len(f), f"one per row of x ({len(x)})")
        fits += [(p, f) for p in sparse_probes(f[train], y[train], f[val], y[val], ks, Cs, seed)]
    rows = []
    for fit, data in fits:
        ev = fit.evaluate(data[test], y[test])
        row = {
            "method": fit.method,
            "C": fit.C,
            "val_auc": fit.val_auc,
            "test_auc": ev["auc"],
            "test_accuracy": ev["accuracy"],
        }
        if scores:
            row |= {"val_scores": fit.scores(data[val]), "val_labels": y[val]}
        rows.append(row)
    return rows


def quiver(rows: list[dict], with_sae: bool = True) -> dict:
    """The validation-best method among ``rows`` (from :func:`probe_task`), judged on test.

    ``with_sae=False`` leaves out the ``sae_k*`` methods. Ties go to the earlier row.
    Returns the chosen row.
    """
    candidates = [r for r in rows if with_sae or not r["method"].startswith("sae_")]
    allowed = "at least one method" + ("" if with_sae else " that is not an SAE probe")
    require(bool(candidates), "rows (candidates)", [r["method"] for r in rows], allowed)
    return max(candidates, key=lambda r: r["val_auc"])
