"""Planted dictionaries and firing frequencies: the pieces every ground-truth toy is made of.

Layout (the library's one layout): ``x`` is ``[n, d]``, true codes are ``[n, n_features]``,
the true dictionary is ``[n_features, d]`` with unit-norm rows (atoms), and
``x = codes @ dictionary`` (plus a constant offset and Gaussian noise when asked for).

Randomness: every function takes a CPU ``torch.Generator`` or an ``int`` seed. Tensors are
drawn on the CPU and then moved to ``device``, so a seed gives the same numbers on any device.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from saelib.metrics import matched_cosines
from saelib.validation import check_choice, check_int, check_real, is_int, require

Seed = int | torch.Generator
Frequency = Literal["uniform", "zipf"]
FREQUENCIES: tuple[str, ...] = get_args(Frequency)

# Active features get magnitudes of at least this, so ``codes != 0`` is exactly the active set.
TINY = torch.finfo(torch.float32).tiny


class SyntheticBatch(NamedTuple):
    """``x = codes @ dictionary`` (+ noise)."""

    x: Tensor  # [n, d]
    codes: Tensor  # [n, n_features], non-negative, zero where a feature is off
    dictionary: Tensor  # [n_features, d], unit-norm rows


def as_generator(seed: Seed) -> torch.Generator:
    """``seed`` itself if it is a generator, else a fresh CPU generator seeded with it."""
    if isinstance(seed, torch.Generator):
        return seed
    if not is_int(seed):
        raise TypeError(f"generator must be a torch.Generator or an int seed, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def check_coherence(coherence: object, d: int) -> None:
    """``coherence`` must be in [0, 1), and 0 when ``d == 1`` (no room for a shared direction)."""
    check_real("coherence", coherence, 0, 1, open_high=True)
    require(coherence == 0 or d >= 2, "coherence", coherence, "0 when d == 1")


def random_dictionary(
    n_features: int,
    d: int,
    *,
    coherence: float = 0.0,
    orthogonal: bool = False,
    generator: Seed,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random unit-norm atoms, optionally leaning towards one shared direction.

    Each atom is ``a_i = sqrt(c) s + sqrt(1 - c) u_i`` with ``c = coherence``, ``s`` a random
    unit vector shared by all atoms and ``u_i`` unit vectors orthogonal to ``s``: Gaussian
    directions with their ``s`` component removed, or (``orthogonal=True``) orthonormal rows
    from the QR factorisation of a Gaussian matrix. So ``||a_i|| = 1`` and
    ``cos(a_i, a_j) = c + (1 - c) <u_i, u_j>``: the expected pairwise cosine is exactly ``c``
    (the ``u_i`` are symmetric about 0), spread about ``(1 - c) / sqrt(d - 1)``; with
    ``orthogonal=True`` every pairwise cosine equals ``c``. ``c = 0`` draws no ``s``.

    Returns a tensor of shape ``[n_features, d]``, float32.
    """
    check_int("n_features", n_features, 1)
    check_int("d", d, 1)
    check_coherence(coherence, d)
    n_dirs = n_features + (coherence > 0)
    require(
        not orthogonal or n_dirs <= d,
        "n_features",
        n_features,
        f"<= d ({d}) for orthogonal=True (<= d - 1 when coherence > 0)",
    )
    g = as_generator(generator)
    if orthogonal:
        dirs = orthonormal_rows(n_dirs, d, g)
    else:
        dirs = F.normalize(torch.randn(n_dirs, d, generator=g), dim=1)
    if coherence > 0:
        shared, u = dirs[-1], dirs[:-1]
        # Removing the shared component makes the atoms exactly unit norm (a no-op when orthogonal).
        u = F.normalize(u - (u @ shared)[:, None] * shared, dim=1)
        dirs = math.sqrt(coherence) * shared + math.sqrt(1 - coherence) * u
    return F.normalize(dirs, dim=1).to(device)  # normalised again against rounding


def chance_mmcs(true_dict: Tensor, d_sae: int, seed: int, draws: int = 5) -> float:
    """MMCS of random unit-norm dictionaries ``[d_sae, d]`` against ``true_dict
    [n_features, d]``: the level a dictionary of that width reaches by chance (mean of
    ``draws`` draws, the i-th seeded ``seed * 97 + i``)."""
    check_int("draws", draws, 1)
    d = true_dict.shape[1]
    dicts = [random_dictionary(d_sae, d, generator=seed * 97 + i) for i in range(draws)]
    return float(np.mean([matched_cosines(true_dict, r).mmcs for r in dicts]))


def orthonormal_rows(k: int, d: int, generator: Seed) -> Tensor:
    """``k <= d`` Haar-random orthonormal rows, ``[k, d]``."""
    q, r = torch.linalg.qr(torch.randn(d, k, generator=as_generator(generator)))  # q: [d, k]
    # Fixing the signs of R's diagonal makes Q Haar-distributed (Mezzadri 2007, sec. 5).
    return (q * torch.sign(torch.diagonal(r))).T


def firing_probabilities(
    n_features: int,
    *,
    kind: Frequency = "uniform",
    mean_active: float = 1.0,
    zipf_exponent: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-feature firing probabilities summing to ``mean_active``, each in (0, 1].

    ``uniform``: every feature fires with ``mean_active / n_features``. ``zipf``: feature ``i``
    (from 0) fires with probability proportional to ``(i + 1) ** -zipf_exponent``, so the
    probabilities decrease with the index. When a scaled probability would exceed 1 it is
    set to 1 and the rest are rescaled to keep the sum (water-filling), so the sum is always
    ``mean_active`` and the order is kept.

    Returns a tensor of shape ``[n_features]``, float32.
    """
    check_int("n_features", n_features, 1)
    check_choice("kind", kind, FREQUENCIES)
    check_real("mean_active", mean_active, 0, n_features, open_low=True)
    check_real("zipf_exponent", zipf_exponent, 0)
    ranks = torch.arange(1, n_features + 1, dtype=torch.float64)
    weights = ranks.pow(-zipf_exponent) if kind == "zipf" else torch.ones_like(ranks)
    capped = torch.zeros(n_features, dtype=torch.bool)
    while True:  # at most n_features passes: each one caps at least one more feature
        free = weights[~capped]
        scale = (mean_active - capped.sum()) / free.sum() if len(free) else 0.0
        p = torch.where(capped, 1.0, weights * scale)
        over = (p > 1) & ~capped
        if not over.any():
            return p.float().to(device)
        capped |= over
