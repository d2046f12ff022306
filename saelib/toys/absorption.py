"""Feature absorption the way Chanin et al. measure it, on known parent and child features.

Chanin et al. 2024 (*A is for Absorption*, arXiv:2409.14507) and SAEBench's absorption
evaluation judge absorption per sample where a feature is present: the SAE's **main latent**
for the feature does not fire, and another latent that fires carries the feature's direction
instead. On language models the feature is a first-letter probe; on ground truth it is a
true parent atom ``t_p``, present with true magnitude ``c_p`` on the samples where the parent
fires together with one of its children (the case the child's latent can absorb). With
``proj_j = f_j <W_dec_j, t_p>`` the part of latent ``j``'s reconstruction along ``t_p``:

- **full absorption** of a sample: the main latent is silent, and the latent of largest
  ``proj_j`` has ``cos(W_dec_j, t_p) >= cos_threshold`` (0.025 in SAEBench) and
  ``proj_j >= proportion * c_p`` (0.4);
- **absorption fraction** (SAEBench's partial measure, after Till): the share of the parent's
  projection carried by up to ``max_absorbers`` (3) other latents with cos >= 0.1, rather than
  by the main latent; 0 when those carry less than ``proportion * c_p`` or the main latent
  carries all of ``c_p``, 1 when the main latent carries nothing.

Beside them, the **miss rates**: how often the main latent is silent with a child
(``parent_miss``) and with the parent alone (``parent_alone_miss``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from saelib.validation import check_int, check_real, require

__all__ = ["ChaninAbsorption", "chanin_absorption"]


class ChaninAbsorption(NamedTuple):
    """Per parent ``[P]`` (nan where no sample qualifies) and their means over parents."""

    full_rate: float  # mean of full_per_parent
    fraction: float  # mean of fraction_per_parent
    parent_miss: float  # mean of miss_per_parent
    parent_alone_miss: float  # mean of alone_miss_per_parent
    full_per_parent: Tensor  # [P] share of parent-with-child samples fully absorbed
    fraction_per_parent: Tensor  # [P] mean absorption fraction on those samples
    miss_per_parent: Tensor  # [P] share of them where the main latent is silent
    alone_miss_per_parent: Tensor  # [P] the same on samples with the parent and no child


def _nanmean(t: Tensor) -> float:
    seen = ~t.isnan()
    return t[seen].mean().item() if seen.any() else float("nan")


def _check(true_codes, learned_codes, true_dict, W_dec, parents, children, main_latent) -> None:
    n, n_true = true_codes.shape if true_codes.ndim == 2 else (None, None)
    require(true_codes.ndim == 2, "true_codes", list(true_codes.shape), "[n, n_true]")
    require(learned_codes.ndim == 2 and learned_codes.shape[0] == n, "learned_codes",
            list(learned_codes.shape), f"[{n}, d_sae]")  # fmt: skip
    d_sae = learned_codes.shape[1]
    require(true_dict.ndim == 2 and true_dict.shape[0] == n_true, "true_dict",
            list(true_dict.shape), f"[{n_true}, d]")  # fmt: skip
    require(W_dec.shape == (d_sae, true_dict.shape[1]), "W_dec", list(W_dec.shape),
            f"[{d_sae}, {true_dict.shape[1]}]")  # fmt: skip
    require(parents.ndim == 1, "parents", list(parents.shape), "[P]")
    require(children.ndim == 2 and children.shape[0] == parents.shape[0], "children",
            list(children.shape), f"[{parents.shape[0]}, C]")  # fmt: skip
    require(main_latent.shape == parents.shape, "main_latent", list(main_latent.shape),
            f"[{parents.shape[0]}]")  # fmt: skip


@torch.no_grad()
def chanin_absorption(
    true_codes: Tensor,
    learned_codes: Tensor,
    true_dict: Tensor,
    W_dec: Tensor,
    parents: Tensor,
    children: Tensor,
    main_latent: Tensor,
    *,
    cos_threshold: float = 0.025,
    fraction_cos_threshold: float = 0.1,
    proportion: float = 0.4,
    max_absorbers: int = 3,
) -> ChaninAbsorption:
    """Full absorption, absorption fraction and miss rates of every parent (module docstring).

    ``true_codes [n, n_true]`` and ``learned_codes [n, d_sae]`` on the same samples,
    ``true_dict [n_true, d]``, ``W_dec [d_sae, d]``, ``parents [P]``, ``children [P, C]``
    (true feature indices), ``main_latent [P]`` the latent standing for each parent (e.g.
    ``feature_metrics.parent_latents``). Computed in float64 on the CPU.
    """
    args = [t.detach().cpu() for t in (true_codes, learned_codes, true_dict, W_dec)]
    parents, children, main_latent = (t.cpu().long() for t in (parents, children, main_latent))
    _check(*args, parents, children, main_latent)
    check_real("cos_threshold", cos_threshold, -1, 1)
    check_real("fraction_cos_threshold", fraction_cos_threshold, -1, 1)
    check_real("proportion", proportion, 0, 1, open_low=True)
    check_int("max_absorbers", max_absorbers, 1)
    codes, f, t, w = (a.double() for a in args)
    t = F.normalize(t, dim=1)
    active = codes != 0
    full, frac, miss, alone = [], [], [], []
    for p, kids, m in zip(parents.tolist(), children.tolist(), main_latent.tolist(), strict=True):
        with_child = active[:, p] & active[:, kids].any(1)  # [n]
        only = active[:, p] & ~active[:, kids].any(1)
        alone.append((f[only, m] == 0).double().mean() if only.any() else torch.tensor(torch.nan))
        if not with_child.any():
            full.append(torch.tensor(torch.nan))
            frac.append(torch.tensor(torch.nan))
            miss.append(torch.tensor(torch.nan))
            continue
        dots = w @ t[p]  # [d_sae] <W_dec_j, t_p>
        cos = dots / w.norm(dim=1).clamp_min(1e-12)
        fs, c = f[with_child], codes[with_child, p]  # [n_p, d_sae], [n_p]
        proj = fs * dots  # [n_p, d_sae]
        silent = fs[:, m] == 0
        top = proj.argmax(1)
        top_proj = proj.gather(1, top[:, None])[:, 0]
        full.append((silent & (cos[top] >= cos_threshold) & (top_proj >= proportion * c)).double()
                    .mean())  # fmt: skip
        others = proj.clone()
        others[:, m] = 0.0
        others[:, cos < fraction_cos_threshold] = 0.0
        others = others.clamp_min(0)
        absorbed = others.topk(min(max_absorbers, others.shape[1]), dim=1).values.sum(1)
        main = proj[:, m]
        share = torch.minimum(absorbed, c - main) / (torch.minimum(absorbed, c - main) + main)
        share = torch.where(main <= 0, 1.0, share.nan_to_num(0.0).clamp(0, 1))
        share = torch.where((main >= c) | (absorbed < proportion * c), 0.0, share)
        frac.append(share.mean())
        miss.append(silent.double().mean())
    per = [torch.stack(v).float() for v in (full, frac, miss, alone)]
    return ChaninAbsorption(*(_nanmean(v) for v in per), *per)
