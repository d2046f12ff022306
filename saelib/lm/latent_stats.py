"""What a dashboard says about all of an SAE's latents at once: token purity, input or output.

A :class:`saelib.lm.dashboard.Dashboard` over every latent holds, per latent, the corpus
positions of its ``n_top`` largest activations and of its activation-quantile examples. The
token at such a position is the token the latent fired on. From those:

- **token purity** of a set of examples: the share of them on the latent's most common token
  (1: every example is the same token; a latent that fires on many tokens is near 0);
- a latent's **top token**: its most common token among the top activations;
- whether that top token is among the tokens the latent's decoder direction **promotes**
  (``Dashboard.promoted_ids``, the direct logit effect): a latent that fires on a token and
  pushes up the same token reads like an output feature, one that does not like an input
  feature (Arad, Mueller & Belinkov 2025 score latents this way, with steering instead of
  the direct logit effect).

Only **live** latents count: those with at least ``min_firings`` firings on the corpus, so
that their top activations are real examples.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from saelib.lm.dashboard import Dashboard
from saelib.validation import check_int, require

__all__ = ["example_tokens", "latent_table", "pick_latents", "token_purity"]


def example_tokens(index: Tensor, tokens: Tensor) -> Tensor:
    """Token id at each flat corpus position of ``index [...]`` (``seq * n_ctx + pos``, -1
    for an empty slot) in ``tokens [n_seq, n_ctx]``; -1 where the slot is empty."""
    flat = tokens.reshape(-1)
    found = flat[index.clamp_min(0)]
    return torch.where(index >= 0, found, -1)


def token_purity(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per row of ``ids [n, m]`` (-1 = no example): the share of the row's examples on its
    most common token, and that token (-1 for a row without examples). Ties go to the
    smaller id. Returns ``(purity [n] float64, token [n] long)``."""
    require(ids.dim() == 2, "ids", list(ids.shape), "a 2-d tensor [n, m]")
    purity = torch.zeros(len(ids), dtype=torch.float64)
    top = torch.full((len(ids),), -1, dtype=torch.long)
    for i, row in enumerate(ids):
        row = row[row >= 0]
        if len(row):
            values, counts = row.unique(return_counts=True)  # values sorted: ties -> smaller
            best = int(counts.argmax())
            purity[i], top[i] = counts[best].item() / len(row), values[best]
    return purity, top


def latent_table(dash: Dashboard, tokens: Tensor, min_firings: int = 20) -> pd.DataFrame:
    """Per selected latent of ``dash`` (computed on ``tokens [n_seq, n_ctx]``): density,
    firings, whether it is live, token purity of its top activations and of its quantile
    examples, its top token and whether that token is among its promoted tokens.

    Returns a DataFrame indexed by latent.
    """
    check_int("min_firings", min_firings, 1)
    n_seq, n_ctx = dash.meta["n_seq"], dash.meta["n_ctx"]
    shape = list(tokens.shape)
    require(shape == [n_seq, n_ctx], "tokens", shape, f"the dashboard's corpus [{n_seq}, {n_ctx}]")
    latents = dash.latents
    top_ids = example_tokens(dash.top_index[latents], tokens)  # [n_sel, n_top]
    group_ids = example_tokens(dash.group_index.flatten(1), tokens)  # [n_sel, groups x per]
    purity_top, top_token = token_purity(top_ids)
    purity_groups, _ = token_purity(group_ids)
    promotes = (dash.promoted_ids == top_token.unsqueeze(1)).any(dim=1)
    fired = dash.fire_count[latents]
    return pd.DataFrame(
        {
            "density": dash.density[latents].numpy(),
            "firings": fired.numpy(),
            "live": (fired >= min_firings).numpy(),
            "purity_top": purity_top.numpy(),
            "purity_groups": purity_groups.numpy(),
            "top_token": top_token.numpy(),
            "promotes_top_token": (promotes & (top_token >= 0)).numpy(),
        },
        index=pd.Index(latents.numpy(), name="latent"),
    )


def pick_latents(table: pd.DataFrame, n: int, seed: int) -> dict[str, list[int]]:
    """Latents to show, chosen by rule from :func:`latent_table`'s ``table``: the ``n`` most
    frequent, ``n`` live ones drawn at random (``seed``), the ``n`` rarest live ones, and the
    ``n`` live ones of highest and of lowest top-token purity. A latent shown by an earlier
    rule is not repeated."""
    check_int("n", n, 1)
    live = table[table["live"]]
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(live), generator=gen).tolist()
    rules = {
        "most frequent": live.sort_values("density", ascending=False).index,
        "random": live.index[order],
        "rarest live": live.sort_values("density").index,
        "purest": live.sort_values("purity_top", ascending=False, kind="stable").index,
        "least pure": live.sort_values("purity_top", kind="stable").index,
    }
    shown: set[int] = set()
    picked = {}
    for name, candidates in rules.items():
        chosen = [int(i) for i in candidates if int(i) not in shown][:n]
        shown.update(chosen)
        picked[name] = chosen
    return picked
