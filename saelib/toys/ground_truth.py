"""Train SAEs on data with known features and score them against those features.

    truth = Truth(dictionary=D, x_eval=x, codes_eval=c)       # what we know about the data
    table, saes = train_and_score(runs, lambda run: batches, truth)

One row per run (``saelib.evaluation.sweep``): its labels, ``evaluate``'s metrics (FVU, L0,
dead fraction, MMCS, ...), the feature-level measures of ``saelib.toys.feature_metrics``
(composite fraction, mean nearest-neighbour cosine, and with a hierarchy, absorption and
hedging), the value of the SAE's own training objective on the evaluation set, and the
sweep's ``train_*`` and ``seconds`` columns. ``variant_runs`` builds the runs of a comparison
of named variants.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import Tensor

from saelib import metrics
from saelib.evaluation import Run, evaluate, sweep
from saelib.saes import SAE, SAEConfig, inference
from saelib.toys import feature_metrics as fm
from saelib.toys.true_solution import objective
from saelib.training import TrainConfig


@dataclass(frozen=True)
class Truth:
    """The known structure of a data set (CPU tensors)."""

    dictionary: Tensor
    """True atoms ``[n_true, d]``."""
    x_eval: Tensor
    """Held-out activations ``[n, d]``."""
    codes_eval: Tensor
    """Their true codes ``[n, n_true]``."""
    composed: Tensor | None = None
    """Composed directions ``[n_composed, d]`` to score against (optional)."""
    parents: Tensor | None = None
    """Parent feature indices ``[P]`` of a hierarchy (optional)."""
    children: Tensor | None = None
    """Children ``[P, C]`` of each parent (with ``parents``)."""


@torch.no_grad()
def score(sae: SAE, truth: Truth, sparsity_coeff: float) -> dict[str, float]:
    """All metrics of one trained SAE against ``truth`` (see the module docstring).

    ``composite_fraction`` counts only latents that fire on ``x_eval``;
    ``mmcs_composed`` is the MMCS of the composed directions against those latents;
    ``objective`` is ``mse + sparsity_coeff * sparsity`` (without any orthogonality term);
    ``absorption``/``hedging`` average over parent-child pairs (``hedging_abs``: of |hedging|).
    The SAE's mode (train or eval) is left as it was.
    """
    row = evaluate(sae, truth.x_eval, true_dictionary=truth.dictionary)
    with inference(sae):
        f = torch.cat([sae.encode(c) for c in truth.x_eval.split(8192)])
    W = sae.W_dec.detach().cpu()  # [d_sae, d]
    alive = (f != 0).any(0).cpu()
    row["composite_fraction"] = fm.composites(truth.dictionary, W, alive=alive).fraction
    row["nn_cos_mean"] = fm.nearest_neighbour_cos(W).mean().item() if len(W) > 1 else math.nan
    if truth.composed is not None:
        live = W[alive] if alive.any() else W
        row["mmcs_composed"] = metrics.matched_cosines(truth.composed, live).mmcs
    row["objective"] = objective(sae, truth.x_eval, sparsity_coeff)["total"]
    if truth.parents is not None:
        pl = fm.parent_latents(truth.dictionary, W, truth.parents)
        ab = fm.absorption(truth.codes_eval, f.cpu(), truth.parents, truth.children, pl)
        hedge = fm.hedging(truth.dictionary, W, truth.parents, truth.children, pl)
        row["absorption"] = ab.rate
        row["parent_alone_miss"] = ab.parent_alone_miss.nanmean().item()
        row["hedging"] = hedge.nanmean().item()
        row["hedging_abs"] = hedge.abs().nanmean().item()
    return row


def train_and_score(
    runs: Sequence[Run],
    batches: Callable[[Run], Iterable[Tensor]],
    truth: Truth,
    *,
    start: Callable[[Run], SAE] | None = None,
) -> tuple[pd.DataFrame, list[SAE]]:
    """``saelib.evaluation.sweep`` of ``runs`` scored by :func:`score` against ``truth``.

    ``start(run)`` may supply the SAE to train from (e.g. one initialised at the true
    dictionary); by default a fresh ``make_sae(run.sae)``. No progress bar. Returns the
    table and the SAEs (in eval mode).
    """

    def scored(sae: SAE, run: Run) -> dict[str, float]:
        return score(sae, truth, run.train.sparsity_coeff)

    return sweep(runs, batches, scored, start=start, progress=False)


def variant_runs(
    variants: Mapping[str, tuple[SAEConfig, TrainConfig]], seeds: Iterable[int]
) -> list[Run]:
    """The runs comparing named variants over seeds: seed-major, variants in order.

    Each ``name: (sae, train)`` gives ``Run(replace(sae, seed=s), train, {"variant": name,
    "seed": s})`` for every seed ``s``.
    """
    return [
        Run(replace(sae, seed=s), train, {"variant": name, "seed": s})
        for s in seeds
        for name, (sae, train) in variants.items()
    ]
