"""Pooling a text's tokens into one vector: which tokens count, and last or mean of them.

    keep = token_mask(acts, lengths, site)      # [b, T]: real tokens the SAE's site keeps
    x = pool(acts, keep, "mean")                # [b, d]

One implementation (torch) for activations and codes alike; numpy arrays are accepted and
returned as numpy.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from saelib.lm.site import Site
from saelib.validation import check_choice, require

Pooling = Literal["last", "mean"]
POOLINGS: tuple[str, ...] = get_args(Pooling)


def pool(acts, keep, how: Pooling = "mean"):
    """Pool ``acts [n, T, d]`` over the tokens where ``keep [n, T]`` is true: ``[n, d]``.

    ``how="last"`` takes each row's last kept token, ``how="mean"`` the mean of the kept
    tokens. Every row must keep at least one token.
    """
    check_choice("how", how, POOLINGS)
    is_numpy = not isinstance(acts, Tensor)
    a = torch.from_numpy(np.asarray(acts)) if is_numpy else acts
    keep = torch.as_tensor(np.asarray(keep) if not isinstance(keep, Tensor) else keep)
    keep = keep.to(device=a.device, dtype=torch.bool)
    require(a.ndim == 3, "acts", tuple(a.shape), "of shape [n, T, d]")
    require(keep.shape == a.shape[:2], "keep", tuple(keep.shape), f"of shape {tuple(a.shape[:2])}")
    n_kept = keep.sum(1)
    require(
        bool((n_kept > 0).all()),
        "keep (tokens per row)",
        n_kept.tolist(),
        "at least 1 in every row",
    )
    if how == "mean":
        out = (a * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    else:
        pos = torch.arange(a.shape[1], device=a.device)
        last = torch.where(keep, pos, -1).max(1).values  # [n]
        out = a[torch.arange(a.shape[0], device=a.device), last]
    return out.numpy() if is_numpy else out


def token_mask(acts: Tensor, lengths: Tensor, site: Site) -> Tensor:
    """The tokens to pool ``[b, T]`` of right-padded ``acts [b, T, d]`` at ``site``.

    Real tokens (position < ``lengths [b]``) from ``site.skip_first`` on that ``site.keeps``
    (raw norm within ``site.max_norm``). A text with no such token (one token long, or only
    outliers) keeps all its real tokens.
    """
    pos = torch.arange(acts.shape[1], device=acts.device)[None]
    real = pos < lengths[:, None]
    within = site.keeps(acts.reshape(-1, acts.shape[-1])).reshape(acts.shape[:2])
    keep = real & (pos >= site.skip_first) & within
    return torch.where(keep.any(1, keepdim=True), keep, real)
