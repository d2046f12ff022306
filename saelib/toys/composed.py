"""Composed-features toys: sets of mutually exclusive features, one active per set.

Two sets of two is the toy of Anders et al. (2024), "Sparse autoencoders find composed
features in small toy models"; ``n_sets`` sets of ``set_size`` features let a chapter vary
the number of features. Layout: feature
``s * set_size + m`` is member ``m`` of set ``s``; codes ``[n, n_sets * set_size]``,
dictionary ``[n_sets * set_size, d]`` with unit rows, ``x = codes @ dictionary``.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from saelib.toys.dictionaries import TINY, Seed, SyntheticBatch, as_generator, random_dictionary
from saelib.validation import check_int, check_real


class ComposedSets(NamedTuple):
    """The data, and every composed direction: one feature from each of two sets."""

    batch: SyntheticBatch  # x [n, d], codes [n, n_features], dictionary [n_features, d]
    composed: Tensor  # [n_pairs, d]: unit(t_i + t_j) for i, j in different sets
    composed_pairs: Tensor  # [n_pairs, 2] long, the (i, j) of each composed direction
    set_of: Tensor  # [n_features] long, the set each feature belongs to


def composed_sets(
    n: int,
    *,
    n_sets: int = 2,
    set_size: int = 2,
    d: int = 2,
    correlation: float = 0.0,
    one_hot_fraction: float = 0.0,
    generator: Seed,
    dictionary_seed: int = 0,
    device: torch.device | str | None = None,
) -> ComposedSets:
    """Sample ``n`` points with exactly one active feature in each of ``n_sets`` sets.

    In each set the active member is uniform; its magnitude is ``Phi(z_s)``, uniform on (0, 1),
    with ``z_s = sqrt(r) z_0 + sqrt(1 - r) e_s`` (``r = correlation`` in [0, 1], ``z_0, e_s``
    standard normal): a Gaussian copula with pairwise latent correlation ``r``, so the
    magnitudes' Pearson correlation is ``(6 / pi) arcsin(r / 2)`` (1 at ``r = 1``: all
    magnitudes of a sample equal). Exactly ``round(one_hot_fraction * n)`` random samples keep
    only one set (chosen uniformly). Directions: with ``d = 2``, two sets of two, the
    mutually exclusive features are antipodal (x1 = e1, x2 = -e1, y1 = e2, y2 = -e2), as in
    the post; otherwise random unit atoms
    (``saelib.toys.dictionaries.random_dictionary``) drawn from ``dictionary_seed``, not from
    ``generator``: training and evaluation sets drawn with different generators share the
    dictionary.
    """
    check_int("n", n, 1)
    check_int("n_sets", n_sets, 2)
    check_int("set_size", set_size, 1)
    check_int("d", d, 2)
    check_real("correlation", correlation, 0, 1)
    check_int("dictionary_seed", dictionary_seed)
    check_real("one_hot_fraction", one_hot_fraction, 0, 1)
    g = as_generator(generator)
    n_features = n_sets * set_size
    if d == 2 and n_sets == 2 and set_size == 2:
        dictionary = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    else:
        dictionary = random_dictionary(n_features, d, generator=dictionary_seed)
    codes = _codes(n, n_sets, set_size, correlation, one_hot_fraction, g)
    set_of = torch.arange(n_features) // set_size
    pairs = torch.tensor(
        [(i, j) for i, j in itertools.combinations(range(n_features), 2) if set_of[i] != set_of[j]]
    )
    composed = F.normalize(dictionary[pairs[:, 0]] + dictionary[pairs[:, 1]], dim=1)
    dictionary, codes = dictionary.to(device), codes.to(device)
    batch = SyntheticBatch(codes @ dictionary, codes, dictionary)
    return ComposedSets(batch, composed.to(device), pairs.to(device), set_of.to(device))


def _codes(n: int, n_sets: int, set_size: int, r: float, one_hot: float, g) -> Tensor:
    z0 = torch.randn(n, 1, generator=g)
    z = math.sqrt(r) * z0 + math.sqrt(1 - r) * torch.randn(n, n_sets, generator=g)
    mags = torch.special.ndtr(z).clamp_min(TINY)  # [n, n_sets]
    keep = torch.ones(n, n_sets, dtype=torch.bool)
    lone = torch.randperm(n, generator=g)[: round(one_hot * n)]
    keep[lone] = False
    keep[lone, torch.randint(n_sets, (len(lone),), generator=g)] = True
    member = torch.randint(set_size, (n, n_sets), generator=g)  # [n, n_sets]
    cols = torch.arange(n_sets) * set_size + member
    codes = torch.zeros(n, n_sets * set_size)
    codes.scatter_(1, cols, mags * keep)
    return codes
