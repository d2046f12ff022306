"""Score a trained SAE on held-out activations, and run labelled sweeps of training runs.

row = evaluate(sae, x_eval, true_dictionary=D)        # {"fvu": ..., "l0": ..., "mmcs": ...}
table = run_sweep(runs, make_batches, x_eval, true_dictionary=D)   # a pandas DataFrame
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
from saelib.saes import SAE, SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer


@torch.no_grad()
def evaluate(
    sae: SAE,
    x: Tensor,
    *,
    true_dictionary: Tensor | None = None,
    true_codes: Tensor | None = None,
    batch_size: int = 8192,
) -> dict[str, float]:
    """Metrics of ``sae`` on ``x [n, d_in]`` in inference mode (``sae.eval()``).

    Always: fvu, explained_variance, l0, dead_fraction, dense_fraction (> 10% of rows),
    shrinkage. With ``true_dictionary [n_features, d_in]``: mmcs and hungarian_cos (atoms
    against the decoder's rows). With ``true_codes [n, n_features]``: mcc.
    """
    x = x.cpu()  # metrics are computed on the CPU, whatever the SAE's device
    true_dictionary = None if true_dictionary is None else true_dictionary.cpu()
    true_codes = None if true_codes is None else true_codes.cpu()
    was_training = sae.training
    sae.eval()
    device = next(sae.parameters()).device
    outs = [sae(chunk.to(device)) for chunk in x.split(batch_size)]
    sae.train(was_training)
    x_hat = torch.cat([o.x_hat for o in outs]).cpu()
    f = torch.cat([o.f for o in outs]).cpu()
    row = {
        "fvu": metrics.fvu(x, x_hat),
        "explained_variance": metrics.explained_variance(x, x_hat),
        "l0": metrics.l0(f),
        "dead_fraction": metrics.dead_fraction(f),
        "dense_fraction": metrics.dense_fraction(f, 0.1),
        "shrinkage": metrics.shrinkage(x, x_hat),
    }
    if true_dictionary is not None:
        matched = metrics.matched_cosines(true_dictionary, sae.W_dec.detach().cpu())
        row["mmcs"] = matched.mmcs
        row["hungarian_cos"] = matched.hungarian_mean
    if true_codes is not None:
        row["mcc"] = metrics.mcc(true_codes, f).mcc
    return row


@dataclass
class Run:
    """One training run of a sweep: what to train, how, and labels for the results table."""

    sae: SAEConfig
    train: TrainConfig
    labels: dict = field(default_factory=dict)


def run_sweep(
    runs: Sequence[Run],
    batches: Callable[[Run], Iterable[Tensor]],
    x_eval: Tensor,
    *,
    true_dictionary: Tensor | None = None,
    true_codes: Tensor | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train every run on ``batches(run)`` and evaluate it on ``x_eval``; one row per run.

    Rows hold the run's labels, its architecture, the evaluation metrics, the final
    training loss terms and the wall time (seconds, not a regression figure).
    """
    rows = []
    bar = progress_bar(progress, runs, desc="sweep")
    for run in bar:
        bar.set_postfix(architecture=run.sae.architecture, **run.labels)
        start = time.perf_counter()
        sae = make_sae(run.sae)
        # one bar for the sweep; nested per-run bars garble non-terminal output
        train_cfg = replace(run.train, progress=False) if progress else run.train
        history = Trainer(sae, train_cfg).fit(batches(run))
        row = {"architecture": run.sae.architecture, **run.labels}
        row.update(evaluate(sae, x_eval, true_dictionary=true_dictionary, true_codes=true_codes))
        row.update({f"train_{k}": v for k, v in history[-1].items() if k != "step"})
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    return pd.DataFrame(rows)


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
