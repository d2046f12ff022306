"""Which tasks can decide a claim, and whether their best layers differ beyond noise.

    ok, counts = splittable(task.labels, task.groups, seed, min_test_groups=20)
    chosen = usable_tasks(directory, manifest, names, seed, min_test_groups=20)
    flags = flag_tasks(table)                   # chance / ceiling on validation, per task
    null = layer_null(labels, scores, n_boot=1000, seed=0)

``layer_null`` is a bootstrap test of the objection's premise (``shared/seeds 001``): do
tasks peak at different layers, or would one common layer profile, plus the noise of a
finite validation set, give best layers as scattered as those seen? The statistic is

    G(A) = mean_t [ max_l A[t, l] - A[t, l*] ],   l* = argmax_l mean_t A[t, l]

on the matrix ``A [task, layer]`` of validation AUCs: how much tasks gain, on the data the
layers were chosen on, from their own best layer over the common one. Selection noise
alone makes G positive. The null world has no task-by-layer interaction: its profile is
the additive fit ``A0[t, l] = mean_l A[t] + mean_t A[:, l] - mean A``, and its noise is the
observed one, drawn by resampling each task's validation examples (within class, the same
rows at every layer, so the correlation between layers is kept): ``A0 + (A* - A)``
(a centred bootstrap, as in Hall and Wilson 1991). The p-value is the share of null
draws whose G reaches the observed one (with the usual +1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from saelib.probing.probes import group_split
from saelib.probing.tasks import ProbingTask, load_task
from saelib.validation import check_int, require

CHANCE_AUC = 0.6  # declared in saelib/schemas/06_probing.yaml: best dense val AUC below it
CEILING_AUC = 0.98  # declared there: dense val AUC above it at every layer


def splittable(labels, groups, seed: int, min_test_groups: int = 20) -> tuple[bool, dict]:
    """Whether :func:`group_split` (seeded) gives at least ``min_test_groups`` groups in
    each of its validation and test splits; and the group counts of the three splits."""
    check_int("min_test_groups", min_test_groups, low=1)
    groups = np.asarray(groups)
    try:
        parts = group_split(labels, groups, seed=seed)
    except ValueError:
        return False, {"train": 0, "val": 0, "test": 0}
    counts = {
        name: len(np.unique(groups[idx]))
        for name, idx in zip(("train", "val", "test"), parts, strict=True)
    }
    return min(counts["val"], counts["test"]) >= min_test_groups, counts


@dataclass
class TaskChoice:
    """The result of :func:`usable_tasks`."""

    tasks: list[ProbingTask]  # the requested, built tasks that split, in request order
    splits: pd.DataFrame  # per task: family, examples, groups, groups per split
    dropped: list[str]  # built, but too few groups in validation or test
    missing: list[str]  # requested but not built (see the manifest's "skipped")


def usable_tasks(
    directory: str | Path,
    manifest: dict,
    names: Sequence[str] = (),
    seed: int = 0,
    min_test_groups: int = 20,
) -> TaskChoice:
    """The tasks ``names`` (``[]``: every task built) of the build in ``directory`` that
    :func:`splittable` accepts; ``manifest`` is what ``build`` returned for it.

    Raises a ``ValueError`` when fewer than two tasks are left: the chapter's claims
    are intervals over tasks.
    """
    built = sorted(manifest["tasks"])
    missing = [t for t in names if t not in built]
    tasks, rows, dropped = [], [], []
    for name in [t for t in (names or built) if t in built]:
        task = load_task(name, directory)
        ok, counts = splittable(task.labels, task.groups, seed, min_test_groups)
        rows.append({"task": name, "family": manifest["tasks"][name]["family"]}
                    | {"examples": len(task.labels), "groups": len(set(task.groups))}
                    | {f"{part} groups": n for part, n in counts.items()})  # fmt: skip
        if ok:
            tasks.append(task)
        else:
            dropped.append(name)
    require(len(tasks) >= 2, "tasks (that split)", [t.name for t in tasks],
            f"at least two; built {built}, dropped {dropped}, not built {missing}")  # fmt: skip
    return TaskChoice(tasks, pd.DataFrame(rows), dropped, missing)


def flag_tasks(
    table: pd.DataFrame, chance: float = CHANCE_AUC, ceiling: float = CEILING_AUC
) -> pd.DataFrame:
    """Per task: the dense probe's best and worst validation AUC over layers (each layer's
    better pooling) and its flag: ``chance`` (best < ``chance``), ``ceiling`` (worst >
    ``ceiling``) or ``""``. ``table``: rows of ``probe_layers`` (method ``dense``)."""
    dense = table[table["method"] == "dense"]
    require(len(dense) > 0, "table (dense rows)", 0, "at least one")
    by_layer = dense.groupby(["task", "layer"], sort=False)["val_auc"].max()
    out = by_layer.groupby("task", sort=False).agg(["max", "min"])
    out.columns = ["best val AUC", "worst val AUC"]
    flag = np.where(out["best val AUC"] < chance, "chance", "")
    flag = np.where(out["worst val AUC"] > ceiling, "ceiling", flag)
    return out.assign(flag=flag)


def gain_statistic(A) -> float:
    """G: mean over tasks of ``A[t]``'s maximum minus its value at the column with the
    largest mean (the first such column on ties)."""
    A = np.asarray(A, dtype=float)
    require(A.ndim == 2 and min(A.shape) >= 1, "A (shape)", list(A.shape), "[tasks, layers]")
    common = int(np.argmax(A.mean(0)))
    return float((A.max(1) - A[:, common]).mean())


def _auc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUC of each row of ``s [L, n]`` against ``y [n]`` (ties count half), via ranks."""
    from scipy.stats import rankdata

    ranks = rankdata(s, axis=1)
    pos = y == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return (ranks[:, pos].sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def dense_val_scores(table: pd.DataFrame, tasks: Sequence[str]) -> tuple[list, list]:
    """``(labels, scores)`` for :func:`layer_null`: per task, the validation labels and, at
    every layer (ascending), the scores of the dense probe's validation-best pooling.
    ``table``: rows of ``probe_layers(..., scores=True)``."""
    require("val_scores" in table, "table (columns)", list(table.columns),
            "with val_scores (probe_layers(..., scores=True))")  # fmt: skip
    dense = table[table["method"] == "dense"].sort_values("val_auc", ascending=False, kind="stable")
    best = dense.groupby(["task", "layer"]).head(1).sort_values("layer", kind="stable")
    labels, scores = [], []
    for task in tasks:
        rows = best[best["task"] == task]
        require(len(rows) > 0, "tasks", task, "a task of the table")
        labels.append(np.asarray(rows["val_labels"].iloc[0]))
        scores.append(np.stack(rows["val_scores"].to_list()))
    return labels, scores


@dataclass
class LayerNull:
    """The result of :func:`layer_null`."""

    observed: float  # G on the validation AUCs
    null: np.ndarray  # [n_boot] G in the null world
    p_value: float

    @property
    def excess(self) -> float:
        """Observed G minus the null's median."""
        return float(self.observed - np.median(self.null))

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Observed G minus the null's upper and lower ``(1 +- level) / 2`` quantiles: the
        low end is above 0 exactly when the one-sided test rejects at ``(1 - level) / 2``."""
        hi, lo = np.quantile(self.null, [0.5 + level / 2, 0.5 - level / 2])
        return float(self.observed - hi), float(self.observed - lo)


def layer_null(labels: Sequence, scores: Sequence, n_boot: int = 1000, seed: int = 0) -> LayerNull:
    """The bootstrap test of the module docstring.

    ``labels[t]``: task ``t``'s validation labels ``[n_t]`` (0/1); ``scores[t]``: its
    probe's validation scores at every layer ``[n_layers, n_t]`` (the same layers, in
    the same order, for every task).
    """
    check_int("n_boot", n_boot, low=1)
    require(len(labels) == len(scores) and len(labels) >= 2, "labels, scores (tasks)",
            (len(labels), len(scores)), "as many, at least 2")  # fmt: skip
    ys = [np.asarray(y, dtype=np.int64) for y in labels]
    ss = [np.asarray(s, dtype=float) for s in scores]
    shapes = {s.shape[0] for s in ss}
    require(len(shapes) == 1 and min(shapes) >= 2, "scores (layers per task)", sorted(shapes),
            "one count, at least 2")  # fmt: skip
    for t, (y, s) in enumerate(zip(ys, ss, strict=True)):
        require(s.ndim == 2 and s.shape[1] == len(y), f"scores[{t}] (shape)", list(s.shape),
                f"[n_layers, {len(y)}]")  # fmt: skip
        require(set(np.unique(y).tolist()) == {0, 1}, f"labels[{t}]", np.unique(y).tolist(),
                "both classes 0 and 1")  # fmt: skip
    A = np.stack([_auc(y, s) for y, s in zip(ys, ss, strict=True)])
    A0 = A.mean(1, keepdims=True) + A.mean(0, keepdims=True) - A.mean()
    rng = np.random.default_rng(seed)
    null = np.empty(n_boot)
    for b in range(n_boot):
        star = np.empty_like(A)
        for t, (y, s) in enumerate(zip(ys, ss, strict=True)):
            idx = np.concatenate(
                [rng.choice(np.flatnonzero(y == c), (y == c).sum()) for c in (0, 1)]
            )
            star[t] = _auc(y[idx], s[:, idx])
        null[b] = gain_statistic(A0 + star - A)
    observed = gain_statistic(A)
    p = (1 + int((null >= observed).sum())) / (n_boot + 1)
    return LayerNull(observed, null, p)
