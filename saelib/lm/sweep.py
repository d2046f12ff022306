"""Train and score SAEs on cached language-model activations: reconstruction and downstream loss.

    scorer = LMScorer(lm, hook, x_eval, ce_tokens, scale=activation_scale(x_train))
    table, saes = train_runs(runs, lambda run: scorer.scaled(cache.batches(hook, 512)), scorer)

Activations are multiplied by one constant ``scale`` so that ``E ||s x||^2 = d_in`` (the
"expected average" normalisation of Anthropic's April 2024 update and SAELens); the SAEs
train and code in that unit, and reconstructions are divided by ``scale`` before they are
spliced into the model. FVU is unchanged by the scaling; L1 coefficients are in its unit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace

import pandas as pd
import torch
from torch import Tensor

from saelib import metrics
from saelib.evaluation import Run, evaluate
from saelib.lm.model import LanguageModel
from saelib.lm.splice import next_token_loss, spliced_losses
from saelib.progress import progress_bar
from saelib.saes import SAE, make_sae
from saelib.training import Trainer


def activation_scale(x: Tensor) -> float:
    """``s`` with ``mean_n ||s x_n||^2 = d_in`` for ``x [n, d_in]``."""
    mean_sq = x.double().pow(2).sum(-1).mean().item()
    if mean_sq == 0:
        raise ValueError("x is all zeros: no activation scale")
    return (x.shape[-1] / mean_sq) ** 0.5


def norm_limit(x: Tensor, ratio: float) -> float:
    """``ratio`` times the median token norm of ``x [n, d_in]``.

    Deep in Llama-family models a few tokens per text (attention sinks besides position 0)
    have norms ~100x the median: 0.1-0.5% of SmolLM2's tokens from block 13 on carry ~65%
    of the variance. An SAE trained on them spends itself on those directions and scales
    every other token down; tokens above this limit are left out of training and scoring.
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio!r}")
    return ratio * x.double().norm(dim=-1).median().item()


def _within(x: Tensor, max_norm: float | None) -> Tensor:
    return x if max_norm is None else x[x.norm(dim=-1) <= max_norm]


class ScaledBatches:
    """``batches`` (with ``iter_from``, e.g. ``ShardedBatches``) multiplied by ``scale``;
    rows whose raw norm is above ``max_norm`` are dropped (batches shrink accordingly)."""

    def __init__(self, batches, scale: float, max_norm: float | None = None):
        self.batches, self.scale, self.max_norm = batches, scale, max_norm

    def __iter__(self) -> Iterator[Tensor]:
        return self.iter_from(0)

    def iter_from(self, step: int) -> Iterator[Tensor]:
        return (_within(x, self.max_norm) * self.scale for x in self.batches.iter_from(step))


class LMScorer:
    """Scores reconstructions at one hook: FVU and sparsity on ``x_eval``, losses on tokens.

    ``x_eval [n, d_in]`` are raw (unscaled) held-out activations at ``hook``;
    ``ce_tokens [n_seq, n_ctx]`` are the sequences the spliced loss is measured on. The
    clean and the zero-ablated losses are computed once here. ``max_norm`` (see
    :func:`norm_limit`): tokens above it are left out of ``x_eval`` and of training
    (:meth:`scaled`), and the splice passes them through unchanged.
    """

    def __init__(
        self,
        lm: LanguageModel,
        hook: str,
        x_eval: Tensor,
        ce_tokens: Tensor,
        scale: float,
        *,
        skip_first: int = 0,
        batch_size: int = 8,
        max_norm: float | None = None,
    ):
        self.max_norm = max_norm
        x_eval = _within(x_eval, max_norm)
        self.lm, self.hook, self.x_eval, self.tokens = lm, hook, x_eval, ce_tokens
        self.scale, self.skip_first, self.batch_size = scale, skip_first, batch_size
        kw = dict(skip_first=skip_first, batch_size=batch_size)
        self.clean = next_token_loss(lm, ce_tokens, **kw)
        self.ablated = next_token_loss(lm, ce_tokens, hook, torch.zeros_like, **kw)

    def scaled(self, batches) -> ScaledBatches:
        return ScaledBatches(batches, self.scale, self.max_norm)

    def reconstruction(self, sae: SAE) -> Callable[[Tensor], Tensor]:
        """Raw ``x [n, d_in] -> x_hat`` through ``sae`` in the scaled unit (eval mode)."""
        param = next(sae.parameters())

        @torch.no_grad()
        def reconstruct(x: Tensor) -> Tensor:
            was_training = sae.training
            sae.eval()
            x_hat = sae((x * self.scale).to(param.device, param.dtype)).x_hat
            sae.train(was_training)
            x_hat = (x_hat / self.scale).to(x.device, x.dtype)
            if self.max_norm is None:
                return x_hat
            return torch.where(x.norm(dim=-1, keepdim=True) > self.max_norm, x, x_hat)

        return reconstruct

    def losses(self, reconstruct: Callable[[Tensor], Tensor]) -> dict[str, float]:
        """``delta_loss``, ``ce_loss_recovered`` and the three losses of ``reconstruct``."""
        return spliced_losses(
            self.lm,
            self.tokens,
            self.hook,
            reconstruct,
            clean=self.clean,
            ablated=self.ablated,
            skip_first=self.skip_first,
            batch_size=self.batch_size,
        )

    def score(self, sae: SAE) -> dict[str, float]:
        """``evaluate`` metrics on the scaled ``x_eval`` plus the spliced losses."""
        row = evaluate(sae, self.x_eval * self.scale)
        row.update(self.losses(self.reconstruction(sae)))
        return row

    def score_codes(self, codes: Tensor, x_hat: Tensor, reconstruct) -> dict[str, float]:
        """Metrics of any coder (e.g. SAE+ITO): ``codes``/``x_hat`` on the scaled ``x_eval``."""
        row = {
            "fvu": metrics.fvu(self.x_eval * self.scale, x_hat),
            "l0": metrics.l0(codes),
            "dead_fraction": metrics.dead_fraction(codes),
            "dense_fraction": metrics.dense_fraction(codes, 0.1),
        }
        row.update(self.losses(reconstruct))
        return row


def train_runs(
    runs: Sequence[Run],
    batches: Callable[[Run], Iterable[Tensor]],
    scorer: LMScorer,
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[SAE]]:
    """Train every run, score it with ``scorer``; one table row and one SAE per run."""
    rows, saes = [], []
    bar = progress_bar(progress, runs, desc="sweep")
    for run in bar:
        bar.set_postfix(architecture=run.sae.architecture, **run.labels)
        start = time.perf_counter()
        sae = make_sae(run.sae)
        history = Trainer(sae, replace(run.train, progress=False)).fit(batches(run))
        row = {"architecture": run.sae.architecture, "d_sae": run.sae.d_sae, **run.labels}
        row.update(scorer.score(sae))
        row.update({f"train_{k}": v for k, v in history[-1].items() if k != "step"})
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        saes.append(sae.eval())
    return pd.DataFrame(rows), saes
