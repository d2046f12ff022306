"""Score a trained SAE on held-out activations, and run labelled sweeps of training runs.

row = evaluate(sae, x_eval, true_dictionary=D)        # {"fvu": ..., "l0": ..., "mmcs": ...}
table = run_sweep(runs, make_batches, x_eval, true_dictionary=D)   # a pandas DataFrame
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelib import metrics
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
    for run in tqdm(runs, disable=not progress, desc="sweep"):
        start = time.perf_counter()
        sae = make_sae(run.sae)
        history = Trainer(sae, run.train).fit(batches(run))
        row = {"architecture": run.sae.architecture, **run.labels}
        row.update(evaluate(sae, x_eval, true_dictionary=true_dictionary, true_codes=true_codes))
        row.update({f"train_{k}": v for k, v in history[-1].items() if k != "step"})
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    return pd.DataFrame(rows)
