"""The configurable ground-truth generator: Zipf frequencies, correlated pairs, hierarchy.

``SyntheticData(SyntheticConfig(...))`` plants a dictionary (``saelib.toys.dictionaries``) and
samples ``x = codes @ dictionary`` (+ offset, + noise) with features that fire independently,
in co-firing pairs, or as children of a parent. ``feature_roles`` names each feature's part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from saelib.toys.dictionaries import (
    FREQUENCIES,
    TINY,
    Frequency,
    Seed,
    SyntheticBatch,
    as_generator,
    check_coherence,
    firing_probabilities,
    random_dictionary,
)
from saelib.validation import check_choice, check_int, check_real, require

Magnitude = Literal["uniform", "halfnormal", "exponential", "constant"]
MAGNITUDES: tuple[str, ...] = get_args(Magnitude)
ROLES = ("parent", "child", "co-occurring pair", "independent")


@dataclass(frozen=True)
class SyntheticConfig:
    """A planted dictionary and a firing model; ``SyntheticData(config)`` samples from it.

    Feature indices are laid out in this order, so that under Zipf frequencies the parents
    are the most frequent features: parents, their children (parent ``p`` owns a contiguous
    block), then the correlated pairs, then independent features.
    """

    n_features: int = 16
    """Number of true features (dictionary atoms), >= 1."""
    d: int = 8
    """Dimension of ``x``, >= 1."""
    mean_active: float = 3.0
    """Sum of the base firing probabilities, in (0, n_features]: the expected L0 before pairs
    and hierarchy change some rates (``SyntheticData.probabilities`` holds the realised ones)."""
    frequency: Frequency = "zipf"
    """Base firing probabilities: ``uniform`` or ``zipf`` (see ``firing_probabilities``)."""
    zipf_exponent: float = 1.0
    """Zipf exponent, >= 0 (0 is uniform)."""
    magnitude: Magnitude = "halfnormal"
    """Magnitude of an active feature before scaling: ``uniform`` U(0,1], ``halfnormal`` |N(0,1)|,
    ``exponential`` Exp(1), ``constant`` 1."""
    magnitude_scale: float = 1.0
    """Multiplies every magnitude, > 0."""
    coherence: float = 0.0
    """Expected pairwise cosine of the atoms, in [0, 1) (see ``random_dictionary``)."""
    noise_std: float = 0.0
    """Standard deviation of isotropic Gaussian noise added to ``x``, >= 0."""
    offset_norm: float = 0.0
    """Norm of one constant vector (a random direction) added to every ``x``, >= 0. Real
    activations have a large mean; this is what ``b_dec`` and its initialisation are for."""
    correlated_pairs: int = 0
    """Number of disjoint feature pairs (trigger, partner) that co-fire, >= 0."""
    pair_cofire_prob: float = 0.9
    """P(partner fires | trigger fires), in [0, 1]. When the trigger is silent the partner fires
    at the rate that keeps its marginal at its base probability. The trigger is the rarer
    feature of the pair, which makes that possible unless the partner's rate is close to 1."""
    n_parents: int = 0
    """Number of parent features in the hierarchy, >= 0."""
    children_per_parent: int = 0
    """Children of each parent, >= 0; with ``n_parents`` both 0 or both >= 1."""
    child_prob: float = 0.5
    """P(child fires | its parent fires), in [0, 1]. A child never fires without its parent."""
    exclusive_children: bool = False
    """If True, at most one child of a parent fires (then children_per_parent * child_prob
    must be <= 1)."""
    seed: int = 0
    """Seeds the dictionary and the default sampling stream."""

    def __post_init__(self) -> None:
        check_int("n_features", self.n_features, 1)
        check_int("d", self.d, 1)
        check_real("mean_active", self.mean_active, 0, self.n_features, open_low=True)
        check_choice("frequency", self.frequency, FREQUENCIES)
        check_real("zipf_exponent", self.zipf_exponent, 0)
        check_choice("magnitude", self.magnitude, MAGNITUDES)
        check_real("magnitude_scale", self.magnitude_scale, 0, open_low=True)
        check_coherence(self.coherence, self.d)
        check_real("noise_std", self.noise_std, 0)
        check_real("offset_norm", self.offset_norm, 0)
        check_int("correlated_pairs", self.correlated_pairs, 0)
        check_real("pair_cofire_prob", self.pair_cofire_prob, 0, 1)
        check_int("n_parents", self.n_parents, 0)
        check_int("children_per_parent", self.children_per_parent, 0)
        n_kids, n_parents = self.children_per_parent, self.n_parents
        require(
            (n_kids == 0) == (n_parents == 0),
            "children_per_parent",
            n_kids,
            f"0 when n_parents is 0 and >= 1 otherwise (n_parents={n_parents})",
        )
        check_real("child_prob", self.child_prob, 0, 1)
        exclusive = self.exclusive_children
        require(isinstance(exclusive, bool), "exclusive_children", exclusive, "a bool")
        require(
            not self.exclusive_children or n_kids * self.child_prob <= 1 + 1e-9,
            "child_prob",
            self.child_prob,
            f"<= 1 / children_per_parent (children_per_parent={n_kids}) when exclusive_children",
        )
        check_int("seed", self.seed, 0)
        used = n_parents * (1 + n_kids) + 2 * self.correlated_pairs
        require(
            used <= self.n_features,
            "n_features",
            self.n_features,
            f">= n_parents * (1 + children_per_parent) + 2 * correlated_pairs = {used}",
        )


class SyntheticData:
    """Samples ``x = codes @ dictionary`` (+ noise) from a ``SyntheticConfig``.

    The dictionary and the firing probabilities are built once from ``config.seed``. Firing:

    - every feature fires independently with its base probability (``firing_probabilities``),
      except that
    - in each correlated pair, the partner fires with ``pair_cofire_prob`` when the trigger
      fires, and otherwise at the rate that keeps its marginal probability unchanged;
    - each child fires only when its parent fires, with conditional probability
      ``child_prob`` (at most one child per parent when ``exclusive_children``).

    Magnitudes are drawn independently per active feature.

    Attributes
    ----------
    dictionary : Tensor ``[n_features, d]``, unit-norm rows.
    probabilities : Tensor ``[n_features]``, each feature's realised marginal firing rate.
    parents : Tensor ``[n_parents]`` of feature indices.
    children : Tensor ``[n_parents, children_per_parent]``; row ``p`` are the children of
        ``parents[p]``.
    pairs : Tensor ``[correlated_pairs, 2]``, columns (trigger, partner).
    """

    def __init__(self, config: SyntheticConfig, *, device: torch.device | str | None = None):
        self.config = config
        self.device = torch.device("cpu" if device is None else device)
        g = torch.Generator().manual_seed(config.seed)
        self.dictionary = random_dictionary(
            config.n_features, config.d, coherence=config.coherence, generator=g, device=self.device
        )
        self.parents, self.children, self.pairs = _feature_layout(config)
        base = firing_probabilities(
            config.n_features,
            kind=config.frequency,
            mean_active=config.mean_active,
            zipf_exponent=config.zipf_exponent,
        )
        self._rate_alone, self.probabilities = _rates(
            base, config, self.parents, self.children, self.pairs
        )
        # The default sampling stream gets its seed from the dictionary's generator, so that
        # neighbouring config seeds do not share streams.
        stream_seed = int(torch.randint(2**62, (1,), generator=g))
        self._stream = torch.Generator().manual_seed(stream_seed)
        direction = torch.randn(config.d, generator=g)  # drawn last: earlier draws unchanged
        self.offset = (config.offset_norm * direction / direction.norm()).to(self.device)

    def sample(self, n: int, generator: Seed | None = None) -> SyntheticBatch:
        """Draw ``n`` samples: ``x [n, d]``, ``codes [n, n_features]``, ``dictionary``.

        With ``generator=None`` successive calls continue one stream seeded from
        ``config.seed``; an ``int`` seed gives the same batch on every call.
        """
        check_int("n", n, 1)
        cfg = self.config
        g = self._stream if generator is None else as_generator(generator)
        active = self._sample_active(n, g)  # [n, n_features] bool
        mags = cfg.magnitude_scale * _magnitudes(cfg.magnitude, active.shape, g)
        codes = torch.where(active, mags.clamp_min(TINY), 0.0).to(self.device)
        x = codes @ self.dictionary + self.offset  # [n, d]
        if cfg.noise_std > 0:
            x = x + cfg.noise_std * torch.randn(n, cfg.d, generator=g).to(self.device)
        return SyntheticBatch(x, codes, self.dictionary)

    def batches(self, batch_size: int, seed: Seed) -> Iterator[Tensor]:
        """An endless, deterministic stream of ``x`` batches ``[batch_size, d]`` for training."""
        check_int("batch_size", batch_size, 1)
        g = as_generator(seed)

        def stream() -> Iterator[Tensor]:
            while True:
                yield self.sample(batch_size, generator=g).x

        return stream()

    def _sample_active(self, n: int, g: torch.Generator) -> Tensor:
        cfg = self.config
        u = torch.rand(n, cfg.n_features, generator=g)  # one uniform per (sample, feature)
        active = u < self._rate_alone
        trigger, partner = self.pairs.unbind(1)
        active[:, partner] = torch.where(
            active[:, trigger], u[:, partner] < cfg.pair_cofire_prob, active[:, partner]
        )
        if cfg.n_parents:
            kids = self.children.flatten()
            active[:, kids] = self._children_active(active[:, self.parents], u[:, kids], g)
        return active

    def _children_active(self, parent_on: Tensor, u_kids: Tensor, g: torch.Generator) -> Tensor:
        """Children's firing ``[n, n_parents * children_per_parent]`` given ``parent_on [n, P]``."""
        n_kids, p = self.config.children_per_parent, self.config.child_prob
        on = parent_on.repeat_interleave(n_kids, dim=1)  # each child's parent
        if not self.config.exclusive_children:
            return on & (u_kids < p)
        # One uniform per (sample, parent) picks child j if it lands in [j p, (j + 1) p): the
        # intervals are disjoint, so at most one child fires, each with probability p.
        v = torch.rand(parent_on.shape, generator=g).repeat_interleave(n_kids, dim=1)
        j = torch.arange(n_kids).repeat(parent_on.shape[1])
        return on & (v >= j * p) & (v < (j + 1) * p)


def _feature_layout(config: SyntheticConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Indices of parents ``[P]``, children ``[P, C]`` and pairs ``[K, 2]`` (trigger, partner)."""
    n_parents, n_kids = config.n_parents, config.children_per_parent
    parents = torch.arange(n_parents)
    children = torch.arange(n_parents, n_parents * (1 + n_kids)).reshape(n_parents, n_kids)
    start = n_parents * (1 + n_kids)
    first = torch.arange(start, start + 2 * config.correlated_pairs, 2)
    # Frequencies decrease with the index, so the second of two neighbours is the rarer one:
    # it is the trigger, which lets the partner keep its marginal rate (see ``_rates``).
    pairs = torch.stack([first + 1, first], dim=1)
    return parents, children, pairs


def _rates(
    base: Tensor, config: SyntheticConfig, parents: Tensor, children: Tensor, pairs: Tensor
) -> tuple[Tensor, Tensor]:
    """Rates for the independent draws, and every feature's realised marginal rate."""
    alone, marginal = base.clone(), base.clone()
    trigger, partner = pairs.unbind(1)
    p_t, p_b, c = base[trigger], base[partner], config.pair_cofire_prob
    # Partner's marginal is p_t c + (1 - p_t) q: pick q to make it p_b, clipped to [0, 1].
    q = ((p_b - p_t * c) / (1 - p_t).clamp_min(1e-12)).clamp(0, 1)
    alone[partner] = q
    marginal[partner] = p_t * c + (1 - p_t) * q
    marginal[children] = base[parents, None] * config.child_prob  # [P, C]
    return alone, marginal


def _magnitudes(kind: str, shape: torch.Size, g: torch.Generator) -> Tensor:
    if kind == "uniform":
        return 1 - torch.rand(shape, generator=g)  # U(0, 1]: an active feature is never 0
    if kind == "halfnormal":
        return torch.randn(shape, generator=g).abs()
    if kind == "exponential":
        return torch.empty(shape).exponential_(generator=g)
    return torch.ones(shape)


def feature_roles(data: SyntheticData) -> np.ndarray:
    """Each feature's part in ``data``'s layout: one of ``ROLES``, ``[n_features]`` object array."""
    role = np.full(data.config.n_features, "independent", dtype=object)
    role[data.pairs.flatten().numpy()] = "co-occurring pair"
    role[data.children.flatten().numpy()] = "child"
    role[data.parents.numpy()] = "parent"
    return role
