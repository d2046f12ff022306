"""The hedging toy of Chanin et al. (2025), "Feature hedging", and MSE's prediction for it.

A parent feature and a child that fires only with it. An SAE with one latent for the two
hedges: the latent's atom leans towards the child by the ratio the top eigenvector of the
codes' second moment predicts (``eigenvector_hedging``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from saelib.toys.dictionaries import Seed, SyntheticBatch, as_generator, orthonormal_rows
from saelib.validation import check_int, check_real, require


def hedging_toy(
    n: int,
    *,
    d: int = 50,
    parent_prob: float = 0.25,
    child_prob_given_parent: float = 0.8,
    generator: Seed,
    device: torch.device | str | None = None,
) -> SyntheticBatch:
    """The hedging / absorption toy of Chanin et al. (2025), "Feature hedging".

    Two orthogonal unit features in ``d`` dimensions (rows: parent, child), magnitude 1 when
    active. The parent fires with ``parent_prob``; the child fires only with the parent, with
    conditional probability ``child_prob_given_parent``, so its marginal rate is
    ``parent_prob * child_prob_given_parent`` (0.2 with the defaults). Their notebook
    (``single_latent_hedging_plots.ipynb``) uses a conditional probability of 0.2 (marginal
    0.05): pass ``child_prob_given_parent=0.2`` to match it.

    Returns ``SyntheticBatch`` with ``x [n, d]``, ``codes [n, 2]``, ``dictionary [2, d]``.
    """
    check_int("n", n, 1)
    check_int("d", d, 2)
    check_real("parent_prob", parent_prob, 0, 1)
    check_real("child_prob_given_parent", child_prob_given_parent, 0, 1)
    g = as_generator(generator)
    dictionary = orthonormal_rows(2, d, g)
    parent = torch.rand(n, generator=g) < parent_prob
    child = parent & (torch.rand(n, generator=g) < child_prob_given_parent)
    codes = torch.stack([parent, child], dim=1).float()
    dictionary, codes = dictionary.to(device), codes.to(device)
    return SyntheticBatch(codes @ dictionary, codes, dictionary)


def eigenvector_hedging(codes: Tensor) -> float:
    """The hedging a one-latent SAE should show on ``codes [n, 2]`` (parent, child).

    On the samples where the parent fires, the MSE-optimal single direction is the top
    eigenvector ``v`` of the codes' second moment ``E[c c^T]`` (sign fixed so the parent
    part is positive); the latent's atom is ``v_0 t_parent + v_1 t_child``, so its hedging
    (``feature_metrics.hedging``) is ``v_1 / v_0``.
    """
    shape = list(codes.shape)
    require(len(shape) == 2 and shape[1] == 2, "codes", shape, "[n, 2] (parent, child)")
    on = codes[codes[:, 0] > 0].double()  # [n_on, (parent, child)]
    require(len(on) > 0, "codes", "no sample with the parent active", "with a parent sample")
    _, eigvecs = torch.linalg.eigh(on.T @ on / len(on))
    top = eigvecs[:, -1] * eigvecs[0, -1].sign()
    return (top[1] / top[0]).item()
