"""Train and score SAEs on cached language-model activations: reconstruction and downstream loss.

    site = train_cache.site(hook)                       # scale (and norm limit) measured once
    scorer = LMScorer(lm, site, eval_cache.load(hook), ce_tokens)
    data = scorer.scaled(train_cache.batches(hook, 512))
    table, saes = sweep(runs, lambda run: data, scorer.score)   # saelib.evaluation.sweep

The SAEs train and code in the site's unit (``Site.prepare``: raw activations times one
constant ``scale``, so that ``E ||s x||^2 = d_in``); reconstructions are restored to the
raw unit before they are spliced into the model. FVU is unchanged by the scaling; L1
coefficients are in its unit.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from saelib import metrics
from saelib.coding.ito import sae_ito
from saelib.evaluation import Run, evaluate, metrics_row
from saelib.lm.model import LanguageModel
from saelib.lm.site import Site
from saelib.lm.splice import (
    Reconstruct,
    mean_ablation,
    next_token_loss,
    paired_delta,
    sae_reconstruction,
    sequence_losses,
)
from saelib.saes import SAE
from saelib.training import TrainConfig
from saelib.validation import require


class ScaledBatches:
    """Raw ``batches`` (with ``iter_from``, e.g. ``ShardedBatches``) in ``site``'s unit.

    Rows above the site's ``max_norm`` are dropped (batches shrink accordingly), the rest
    are prepared (multiplied by ``scale``).
    """

    def __init__(self, batches, site: Site):
        self.batches, self.site = batches, site

    def __iter__(self) -> Iterator[Tensor]:
        return self.iter_from(0)

    def iter_from(self, step: int) -> Iterator[Tensor]:
        site = self.site
        return (site.prepare(site.inliers(x)) for x in self.batches.iter_from(step))


@dataclass(frozen=True)
class SpliceBaseline:
    """The losses every splice at one site is compared with, computed once.

    ``clean [n_seq]`` per-sequence clean losses; ``zero`` and ``mean`` the mean losses with
    the activation zero- or mean-ablated (from position ``skip_first`` on; the mean is that
    of the raw activations given to :meth:`measure`).
    """

    clean: Tensor
    zero: float
    mean: float

    @classmethod
    def measure(cls, lm: LanguageModel, site: Site, x: Tensor, tokens: Tensor, batch_size: int = 8):
        """Clean, zero- and mean-ablated losses on ``tokens`` (the mean of raw ``x [n, d]``)."""
        kw = dict(skip_first=site.skip_first, batch_size=batch_size)
        ablate = mean_ablation(x)
        return cls(
            clean=sequence_losses(lm, tokens, **kw),
            zero=next_token_loss(lm, tokens, site.hook, torch.zeros_like, **kw),
            mean=next_token_loss(lm, tokens, site.hook, ablate, **kw),
        )


class LMScorer:
    """Scores reconstructions at one site: FVU and sparsity on ``x_eval``, losses on tokens.

    ``x_eval [n, d_in]`` are raw (unscaled) held-out activations at ``site.hook``; tokens
    above ``site.max_norm`` are left out of them. ``ce_tokens [n_seq, n_ctx]`` are the
    sequences the spliced loss is measured on, from position ``site.skip_first`` on; the
    splice passes the tokens above ``max_norm`` through unchanged. The clean loss per
    sequence and the zero- and mean-ablated losses (:class:`SpliceBaseline`) are computed
    once here, or passed in as ``baseline`` (e.g. to worker processes).
    """

    def __init__(
        self,
        lm: LanguageModel,
        site: Site,
        x_eval: Tensor,
        ce_tokens: Tensor,
        *,
        batch_size: int = 8,
        baseline: SpliceBaseline | None = None,
    ):
        require(site.model == lm.name, "site.model", site.model, f"the model's name {lm.name!r}")
        self.lm, self.site, self.tokens, self.batch_size = lm, site, ce_tokens, batch_size
        self.x_eval = site.inliers(x_eval)
        if baseline is None:
            baseline = SpliceBaseline.measure(lm, site, self.x_eval, ce_tokens, batch_size)
        shape, n_seq = tuple(baseline.clean.shape), len(ce_tokens)
        require(shape == (n_seq,), "baseline.clean", shape, f"one loss per sequence ({n_seq})")
        self.baseline = baseline
        self.clean, self.ablated = baseline.clean.mean().item(), baseline.zero

    def scaled(self, batches) -> ScaledBatches:
        """Raw training ``batches`` in the site's unit, outliers dropped."""
        return ScaledBatches(batches, self.site)

    def reconstruction(self, sae: SAE) -> Reconstruct:
        """Raw ``x [n, d_in] -> x_hat`` through ``sae`` in the site's unit (inference mode)."""
        return self.site.raw_reconstruction(sae_reconstruction(sae))

    def losses(self, reconstruct: Reconstruct) -> dict[str, float]:
        """The spliced loss of ``reconstruct`` against the baseline: ``spliced_loss``,
        ``delta_loss`` with its 95% t interval over sequences (``delta_low``,
        ``delta_high``, :func:`saelib.lm.splice.paired_delta`), and the CE-loss recovered
        against zero ablation (``ce_loss_recovered``) and mean ablation
        (``ce_recovered_mean``)."""
        kw = dict(skip_first=self.site.skip_first, batch_size=self.batch_size)
        spliced = sequence_losses(self.lm, self.tokens, self.site.hook, reconstruct, **kw)
        base, loss = self.baseline, spliced.mean().item()
        return {
            "spliced_loss": loss,
            **paired_delta(spliced, base.clean),
            "ce_loss_recovered": metrics.ce_loss_recovered(self.clean, loss, base.zero),
            "ce_recovered_mean": metrics.ce_loss_recovered(self.clean, loss, base.mean),
        }

    def score(self, sae: SAE, run: Run | None = None, splice: bool = True) -> dict[str, float]:
        """``evaluate`` metrics on the prepared ``x_eval`` plus (``splice``) the spliced losses.

        ``run`` is not used: it lets ``scorer.score`` be the ``score`` of
        ``saelib.evaluation.sweep``.
        """
        row = evaluate(sae, self.site.prepare(self.x_eval))
        if splice:
            row.update(self.losses(self.reconstruction(sae)))
        return row

    def score_codes(self, codes: Tensor, x_hat: Tensor, reconstruct: Reconstruct | None) -> dict:
        """Metrics of any coder (e.g. SAE+ITO): ``codes [n, d_sae]`` and ``x_hat [n, d_in]``
        of the prepared ``x_eval`` (``saelib.evaluation.metrics_row``), plus the losses of
        ``reconstruct`` (raw ``x -> x_hat``) spliced in, unless it is None."""
        row = metrics_row(self.site.prepare(self.x_eval), x_hat, codes)
        if reconstruct is not None:
            row.update(self.losses(reconstruct))
        return row


def train_config(sparsity_coeff: float = 0.0, *, n_steps: int, lr: float, **kw) -> TrainConfig:
    """The training recipe of the language-model chapters, as a ``TrainConfig``.

    The learning rate decays over the last fifth of the ``n_steps`` steps, the sparsity
    coefficient warms up over the first tenth, ``b_dec`` starts at the data mean; ``kw``
    sets any other field (``aux_k``, ``dead_after_tokens``, ``device``).
    """
    recipe = dict(
        lr_decay_steps=n_steps // 5, sparsity_warmup_steps=n_steps // 10, init_b_dec="mean"
    )
    return TrainConfig(n_steps=n_steps, lr=lr, sparsity_coeff=sparsity_coeff, **(recipe | kw))


def ito_table(
    scorer: LMScorer,
    table: pd.DataFrame,
    saes: list[SAE],
    architecture: str = "topk",
    solver: str = "gradient_pursuit",
    splice: Collection[int] | None = None,
) -> pd.DataFrame:
    """SAE+ITO: each ``architecture`` SAE of a sweep's ``table`` with ``solver`` as encoder.

    ``saes`` are the sweep's SAEs, one per row of ``table``; for each of the given
    architecture (a TopK: its ``knob`` is k), ``solver`` (``saelib.coding.ito.sae_ito``)
    codes the prepared ``x_eval`` on the SAE's decoder at L0 = k, and the splice uses the
    same solver (only for the knobs in ``splice``, if given: a splice costs a forward pass
    of the model per sequence batch). One row per SAE: ``architecture``
    ("<architecture>+ITO"), ``knob`` and the scores of :meth:`LMScorer.score_codes`.
    """
    require(len(saes) == len(table), "saes", len(saes), f"one SAE per table row ({len(table)})")
    x = scorer.site.prepare(scorer.x_eval)
    rows = []
    for (_, row), sae in zip(table.iterrows(), saes, strict=True):
        if row["architecture"] != architecture:
            continue
        k = int(row["knob"])
        result = sae_ito(sae, x, solver, l0=k)
        reconstruct = None
        if splice is None or k in splice:
            reconstruct = scorer.site.raw_reconstruction(_ito_code(sae, solver, k))
        scores = scorer.score_codes(result.codes, result.x_hat, reconstruct)
        rows.append({"architecture": f"{architecture}+ITO", "knob": k, **scores})
    return pd.DataFrame(rows)


def _ito_code(sae: SAE, solver: str, l0: int) -> Callable[[Tensor], Tensor]:
    return lambda x: sae_ito(sae, x, solver, l0=l0).x_hat


def value_at(table: pd.DataFrame, column: str, **where) -> float:
    """``column`` of the one row of ``table`` whose columns equal ``where``.

    ``value_at(table, "fvu", architecture="topk", knob=8)``; no match or several raise.
    """
    mask = pd.Series(True, index=table.index)
    for name, value in where.items():
        mask &= table[name] == value
    require(
        int(mask.sum()) == 1,
        "where",
        where,
        f"a condition that one row of the table meets ({int(mask.sum())} do)",
    )
    return float(table.loc[mask, column].iloc[0])
