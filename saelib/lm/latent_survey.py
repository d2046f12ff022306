"""Chapter 07's experiment: one TopK SAE per seed at one hook, and a dashboard of every latent.

For each seed, :func:`run_seed` trains a TopK SAE (``width`` latents, ``k``, aux-k) on the
cached activations at ``layer`` and computes a :class:`saelib.lm.dashboard.Dashboard` of
every latent on held-out sequences; :func:`saelib.lm.latent_stats.latent_table` turns it
into one row per latent, and :func:`effects` into one effect per seed for each claim the
chapter declares (``saelib/schemas/07_latent_dashboards.yaml``). Seeds differ in the SAE's
initialisation and batch order; the corpus and the cache are shared. Workers load the
language model once per process and re-open the cache from its directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import pandas as pd
import torch
from torch import Tensor

from saelib.claims import Effects
from saelib.lm.activations import open_cache
from saelib.lm.dashboard import Dashboard, DashboardConfig, compute_dashboard
from saelib.lm.latent_stats import latent_table
from saelib.lm.model import process_model, resid_hook
from saelib.lm.sweep import ScaledBatches, train_config
from saelib.saes import SAE, SAEConfig, make_sae
from saelib.training import Trainer

__all__ = ["PURE", "LatentSurvey", "SeedResult", "effects", "run_seed"]

PURE = 0.5
"""A latent is single-token when at least this share of its top activations is one token."""


@dataclass(frozen=True)
class LatentSurvey:
    """The chapter's settings (its parameters of the same names) and the shared data."""

    model_name: str
    layer: int
    width: int
    k: int
    n_steps: int
    batch_size: int
    lr: float
    aux_k: int
    dead_after_tokens: int
    n_top: int
    n_groups: int
    per_group: int
    reservoir: int
    window: int
    min_firings: int
    device: str
    train_cache: str = ""
    """Directory of the training activation cache (the hook at ``layer``)."""
    dash_tokens: Tensor | None = None
    """Held-out sequences ``[n_seq, n_ctx]`` the dashboards are computed on."""

    @classmethod
    def from_params(cls, params: Mapping, **data) -> LatentSurvey:
        """The survey from a chapter's checked parameters and ``data``; other names are ignored."""
        names = {f.name for f in fields(cls)} - set(data)
        return cls(**{name: params[name] for name in names if name in params}, **data)

    @property
    def hook(self) -> str:
        return resid_hook(self.layer)

    def dashboard_config(self, seed: int) -> DashboardConfig:
        return DashboardConfig(n_top=self.n_top, n_groups=self.n_groups,
                               per_group=self.per_group, reservoir=self.reservoir,
                               window=self.window, seed=seed)  # fmt: skip


@dataclass
class SeedResult:
    """One seed's SAE, the dashboard of every latent, its latent table and training log."""

    table: pd.DataFrame
    """:func:`saelib.lm.latent_stats.latent_table`, with a ``seed`` column."""
    dash: Dashboard
    history: list[dict]
    sae: SAE


def run_seed(survey: LatentSurvey, seed: int) -> SeedResult:
    """Train the seed's SAE and compute the dashboard of every latent."""
    lm = process_model(survey.model_name, survey.device)
    torch.manual_seed(seed)
    cache = open_cache(survey.train_cache, verify=False)  # shards are verified as they stream
    site = cache.site(survey.hook)
    cfg = SAEConfig(architecture="topk", d_in=lm.d_model, d_sae=survey.width, k=survey.k,
                    seed=seed)  # fmt: skip
    sae = make_sae(cfg).to(survey.device)
    train = train_config(n_steps=survey.n_steps, lr=survey.lr, aux_k=survey.aux_k,
                         dead_after_tokens=survey.dead_after_tokens, device=survey.device,
                         progress=False)  # fmt: skip
    batches = ScaledBatches(cache.batches(survey.hook, survey.batch_size, seed=seed), site)
    history = Trainer(sae, train).fit(batches)
    sae.eval()
    dash = compute_dashboard(sae, lm, survey.dash_tokens, site,
                             config=survey.dashboard_config(seed), progress=False)  # fmt: skip
    table = latent_table(dash, survey.dash_tokens, survey.min_firings).assign(seed=seed)
    return SeedResult(table, dash, history, sae.cpu())


def effects(tables: Sequence[pd.DataFrame]) -> dict[str, list[float]]:
    """One effect per seed (one table per seed) for each claim of chapter 07, over the
    seed's live latents."""
    collected = Effects()
    for table in tables:
        live = table[table["live"]]
        collected.add("token_latents", (live["purity_top"] >= PURE).mean())
        collected.add("top_overstates_purity", (live["purity_top"] - live["purity_groups"]).mean())
        collected.add("few_copy_latents", live["promotes_top_token"].mean())
    return collected.to_dict()
