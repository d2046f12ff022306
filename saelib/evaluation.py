"""Score a trained SAE on held-out activations, and run labelled sweeps of training runs.

row = evaluate(sae, x_eval, true_dictionary=D)        # {"fvu": ..., "l0": ..., "mmcs": ...}
table, saes = sweep(runs, make_batches, lambda sae, run: evaluate(sae, x_eval))
table = run_sweep(runs, make_batches, x_eval, true_dictionary=D)   # the same, scored by evaluate
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saelib import metrics
from saelib.progress import progress_bar
from saelib.saes import SAE, SAEConfig, inference, make_sae
from saelib.training import TrainConfig, Trainer


def metrics_row(
    x: Tensor,
    x_hat: Tensor,
    f: Tensor,
    *,
    W_dec: Tensor | None = None,
    true_dictionary: Tensor | None = None,
    true_codes: Tensor | None = None,
) -> dict[str, float]:
    """Metrics of any coder: activations ``x``, reconstructions ``x_hat`` [n, d_in], codes ``f``.

    Always: fvu, explained_variance, l0, dead_fraction, dense_fraction (> 10% of rows),
    shrinkage. With ``true_dictionary [n_features, d_in]`` and the coder's ``W_dec
    [d_sae, d_in]``: mmcs and hungarian_cos. With ``true_codes [n, n_features]``: mcc.
    """
    x, x_hat, f = x.cpu(), x_hat.cpu(), f.cpu()
    row = {
        "fvu": metrics.fvu(x, x_hat),
        "explained_variance": metrics.explained_variance(x, x_hat),
        "l0": metrics.l0(f),
        "dead_fraction": metrics.dead_fraction(f),
        "dense_fraction": metrics.dense_fraction(f, 0.1),
        "shrinkage": metrics.shrinkage(x, x_hat),
    }
    if true_dictionary is not None:
        if W_dec is None:
            raise ValueError("true_dictionary needs the coder's W_dec to compare against")
        matched = metrics.matched_cosines(true_dictionary.cpu(), W_dec.detach().cpu())
        row["mmcs"] = matched.mmcs
        row["hungarian_cos"] = matched.hungarian_mean
    if true_codes is not None:
        row["mcc"] = metrics.mcc(true_codes.cpu(), f).mcc
    return row


def evaluate(
    sae: SAE,
    x: Tensor,
    *,
    batch_size: int = 8192,
    true_dictionary: Tensor | None = None,
    true_codes: Tensor | None = None,
) -> dict[str, float]:
    """:func:`metrics_row` of ``sae`` on ``x [n, d_in]``, coded in inference mode.

    Metrics are computed on the CPU, whatever the SAE's device.
    """
    device = next(sae.parameters()).device
    with inference(sae), torch.no_grad():
        outs = [sae(chunk.to(device)) for chunk in x.split(batch_size)]
    x_hat = torch.cat([o.x_hat for o in outs])
    f = torch.cat([o.f for o in outs])
    return metrics_row(
        x, x_hat, f, W_dec=sae.W_dec, true_dictionary=true_dictionary, true_codes=true_codes
    )


@dataclass
class Run:
    """One training run of a sweep: what to train, how, and labels for the results table."""

    sae: SAEConfig
    train: TrainConfig
    labels: dict = field(default_factory=dict)


def sweep(
    runs: Sequence[Run],
    batches: Callable[[Run], Iterable[Tensor]],
    score: Callable[[SAE, Run], dict],
    *,
    start: Callable[[Run], SAE] | None = None,
    progress: bool = True,
    keep_history: bool = False,
) -> tuple[pd.DataFrame, list[SAE]]:
    """Make, fit and score every run: the one sweep loop of the library.

    Each run trains ``start(run)`` (default: a fresh ``make_sae(run.sae)``) on
    ``batches(run)``, then ``score(sae, run)`` gives its metrics. One row per run:
    architecture, d_sae, the run's labels, the scores, the final training loss terms
    (``train_<name>``), the wall time (``seconds``, not a regression figure) and, with
    ``keep_history``, the training log (``history``: the Trainer's records). The SAEs
    come back in inference (eval) mode. One progress bar for the sweep: per-run bars are
    off, since nested bars garble non-terminal output.
    """
    rows, saes = [], []
    bar = progress_bar(progress, runs, desc="sweep")
    for run in bar:
        bar.set_postfix(architecture=run.sae.architecture, **run.labels)
        began = time.perf_counter()
        sae = make_sae(run.sae) if start is None else start(run)
        history = Trainer(sae, replace(run.train, progress=False)).fit(batches(run))
        row = {"architecture": run.sae.architecture, "d_sae": run.sae.d_sae, **run.labels}
        row.update(score(sae, run))
        row.update({f"train_{k}": v for k, v in history[-1].items() if k != "step"})
        row["seconds"] = time.perf_counter() - began
        if keep_history:
            row["history"] = history
        rows.append(row)
        saes.append(sae.eval())
    return pd.DataFrame(rows), saes


def run_sweep(
    runs: Sequence[Run],
    batches: Callable[[Run], Iterable[Tensor]],
    x_eval: Tensor,
    *,
    true_dictionary: Tensor | None = None,
    true_codes: Tensor | None = None,
    progress: bool = True,
    keep_history: bool = False,
) -> pd.DataFrame:
    """:func:`sweep` scored by :func:`evaluate` on ``x_eval``; returns the table only."""

    def score(sae: SAE, run: Run) -> dict:
        return evaluate(sae, x_eval, true_dictionary=true_dictionary, true_codes=true_codes)

    return sweep(runs, batches, score, progress=progress, keep_history=keep_history)[0]


def compare_frontiers(
    table: pd.DataFrame, a: str, b: str, x: str = "l0", y: str = "fvu", by: str = "architecture"
) -> pd.DataFrame:
    """Compare ``a``'s runs with ``b``'s frontier at matched ``x`` (e.g. FVU at equal L0).

    For each run of ``a`` whose ``x`` lies within the range of ``b``'s runs, ``b``'s ``y``
    is interpolated linearly in ``log x`` between its two neighbouring runs. Returns
    columns ``x``, ``y_a``, ``y_b`` and ``diff = y_a - y_b`` (negative: ``a`` is lower).
    Points of ``a`` outside ``b``'s range are left out rather than extrapolated.
    """
    runs_a = table[table[by] == a].sort_values(x)
    runs_b = table[table[by] == b].sort_values(x)
    if runs_a.empty or runs_b.empty:
        raise ValueError(f"{by} values {a!r} and {b!r} must both have runs in the table")
    log_xb = np.log(runs_b[x].to_numpy(dtype=float))
    yb = runs_b[y].to_numpy(dtype=float)
    rows = []
    for xa, ya in zip(runs_a[x], runs_a[y], strict=True):
        if log_xb[0] <= np.log(xa) <= log_xb[-1]:
            y_b = float(np.interp(np.log(xa), log_xb, yb))
            rows.append({x: float(xa), "y_a": float(ya), "y_b": y_b, "diff": float(ya) - y_b})
    return pd.DataFrame(rows, columns=[x, "y_a", "y_b", "diff"])


def frontier_gap(
    table: pd.DataFrame, a: str, b: str, x: str = "l0", y: str = "fvu", by: str = "architecture"
) -> float:
    """How far ``a``'s frontier lies below ``b``'s: ``b``'s ``y`` minus ``a``'s at matched ``x``.

    Symmetric in its evidence: every run of ``a`` inside ``b``'s ``x`` range against ``b``'s
    frontier, and every run of ``b`` inside ``a``'s range against ``a``'s (both interpolated
    in ``log x`` by :func:`compare_frontiers`); the mean over those matched runs. Positive:
    ``a`` is lower (for FVU, better). NaN when the two ranges share no run.
    """
    diffs = [-compare_frontiers(table, a, b, x, y, by)["diff"],
             compare_frontiers(table, b, a, x, y, by)["diff"]]  # fmt: skip
    matched = pd.concat(diffs)
    return float(matched.mean()) if len(matched) else float("nan")


def one_row(table: pd.DataFrame, **where) -> pd.Series:
    """The one row of ``table`` whose columns equal ``where``'s values; ValueError naming
    the selection unless exactly one row matches (a result table with a missing or
    duplicated run is a bug to surface, not to average over)."""
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= (table[column] == value).to_numpy()
    rows = table[mask]
    if len(rows) != 1:
        raise ValueError(f"expected one row with {where}, found {len(rows)}")
    return rows.iloc[0]


def recovery_vs_fidelity(table: pd.DataFrame, by: str = "architecture") -> pd.DataFrame:
    """Per group: the run that recovers the dictionary best against the most faithful run.

    Columns: ``best_mmcs`` and ``l0_best_mmcs`` (the run with the highest MMCS),
    ``mmcs_lowest_fvu`` and ``l0_lowest_fvu`` (the run with the lowest FVU), and
    ``agree`` (the two are the same run). Needs ``mmcs``, ``fvu`` and ``l0`` columns.
    """
    rows = {}
    for key, group in table.groupby(by, sort=False):
        best, faithful = group.loc[group["mmcs"].idxmax()], group.loc[group["fvu"].idxmin()]
        rows[key] = {
            "best_mmcs": best["mmcs"],
            "l0_best_mmcs": best["l0"],
            "mmcs_lowest_fvu": faithful["mmcs"],
            "l0_lowest_fvu": faithful["l0"],
            "agree": best.name == faithful.name,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def final_drop(table: pd.DataFrame, term: str = "mse", window: int = 3) -> dict[str, float]:
    """How much a training log's ``term`` still falls over the last quarter of training.

    Per run of ``table`` (a ``history`` column of Trainer records): ``1 - mean(last window
    records) / mean(window records ending at 3/4 of training)``; returns the median and the
    largest over the runs (``plateau_median``, ``plateau_max``).
    """
    drops = []
    for history in table["history"]:
        values = pd.DataFrame(history)[term].to_numpy()
        at = max(window, (3 * len(values)) // 4)
        drops.append(1 - values[-window:].mean() / values[at - window : at].mean())
    return {"plateau_median": float(np.median(drops)), "plateau_max": float(np.max(drops))}
