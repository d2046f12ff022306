"""Ground-truth data for SAE experiments: planted dictionaries and the codes that built ``x``.

Layout (the library's one layout): ``x`` is ``[n, d]``, true codes are ``[n, n_features]``,
the true dictionary is ``[n_features, d]`` with unit-norm rows (atoms), and
``x = codes @ dictionary`` (plus a constant offset and Gaussian noise when asked for).

Randomness: every function takes a CPU ``torch.Generator`` or an ``int`` seed. Tensors are
drawn on the CPU and then moved to ``device``, so a seed gives the same numbers on any device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from saelib.validation import is_int, is_real, require

Seed = int | torch.Generator
Frequency = Literal["uniform", "zipf"]
Magnitude = Literal["uniform", "halfnormal", "exponential", "constant"]
FREQUENCIES: tuple[str, ...] = get_args(Frequency)
MAGNITUDES: tuple[str, ...] = get_args(Magnitude)

# Active features get magnitudes of at least this, so ``codes != 0`` is exactly the active set.
_TINY = torch.finfo(torch.float32).tiny

__all__ = [
    "ComposedFeatures",
    "SyntheticBatch",
    "SyntheticConfig",
    "SyntheticData",
    "composed_features",
    "firing_probabilities",
    "hedging_toy",
    "random_dictionary",
]


class SyntheticBatch(NamedTuple):
    """``x = codes @ dictionary`` (+ noise)."""

    x: Tensor  # [n, d]
    codes: Tensor  # [n, n_features], non-negative, zero where a feature is off
    dictionary: Tensor  # [n_features, d], unit-norm rows


class ComposedFeatures(NamedTuple):
    """The composed-features toy: the data and the four composed directions."""

    batch: SyntheticBatch  # codes columns and dictionary rows in the order x1, x2, y1, y2
    composed: Tensor  # [4, d]: unit(x1+y1), unit(x1+y2), unit(x2+y1), unit(x2+y2)


# --- validation ---------------------------------------------------------------------------


def _check_int(name: str, value: object, lo: int) -> None:
    require(is_int(value) and value >= lo, name, value, f"an int >= {lo}")


def _check_nonnegative(name: str, value: object) -> None:
    require(is_real(value) and value >= 0, name, value, "a finite number >= 0")


def _check_prob(name: str, value: object) -> None:
    require(is_real(value) and 0 <= value <= 1, name, value, "a number in [0, 1]")


def _check_mean_active(value: object, n_features: int) -> None:
    ok = is_real(value) and 0 < value <= n_features
    require(ok, "mean_active", value, f"a number in (0, n_features={n_features}]")


def _check_coherence(value: object, d: int) -> None:
    require(is_real(value) and 0 <= value < 1, "coherence", value, "a number in [0, 1)")
    require(value == 0 or d >= 2, "coherence", value, "0 when d == 1")


def _generator(seed: Seed) -> torch.Generator:
    """``seed`` itself if it is a generator, else a fresh CPU generator seeded with it."""
    if isinstance(seed, torch.Generator):
        return seed
    if not is_int(seed):
        raise TypeError(f"generator must be a torch.Generator or an int seed, got {seed!r}")
    return torch.Generator().manual_seed(seed)


# --- dictionaries and frequencies ---------------------------------------------------------


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
    _check_int("n_features", n_features, 1)
    _check_int("d", d, 1)
    _check_coherence(coherence, d)
    n_dirs = n_features + (coherence > 0)
    require(
        not orthogonal or n_dirs <= d,
        "n_features",
        n_features,
        f"<= d ({d}) for orthogonal=True (<= d - 1 when coherence > 0)",
    )
    return _random_dictionary(n_features, d, coherence, orthogonal, _generator(generator)).to(
        device
    )


def _random_dictionary(
    n_features: int, d: int, coherence: float, orthogonal: bool, g: torch.Generator
) -> Tensor:
    n_dirs = n_features + (coherence > 0)
    if orthogonal:
        dirs = _orthonormal_rows(n_dirs, d, g)
    else:
        dirs = F.normalize(torch.randn(n_dirs, d, generator=g), dim=1)
    if coherence > 0:
        shared, u = dirs[-1], dirs[:-1]
        # Removing the shared component makes the atoms exactly unit norm (a no-op when orthogonal).
        u = F.normalize(u - (u @ shared)[:, None] * shared, dim=1)
        dirs = math.sqrt(coherence) * shared + math.sqrt(1 - coherence) * u
    return F.normalize(dirs, dim=1)  # guards the unit norm against rounding


def _orthonormal_rows(k: int, d: int, g: torch.Generator) -> Tensor:
    """``k <= d`` Haar-random orthonormal rows, ``[k, d]``."""
    q, r = torch.linalg.qr(torch.randn(d, k, generator=g))  # q: [d, k]
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
    _check_int("n_features", n_features, 1)
    require(kind in FREQUENCIES, "kind", kind, f"one of {FREQUENCIES}")
    _check_mean_active(mean_active, n_features)
    _check_nonnegative("zipf_exponent", zipf_exponent)
    return _firing_probabilities(n_features, kind, mean_active, zipf_exponent).to(device)


def _firing_probabilities(
    n_features: int, kind: str, mean_active: float, zipf_exponent: float
) -> Tensor:
    ranks = torch.arange(1, n_features + 1, dtype=torch.float64)
    weights = ranks.pow(-zipf_exponent) if kind == "zipf" else torch.ones_like(ranks)
    capped = torch.zeros(n_features, dtype=torch.bool)
    while True:  # at most n_features passes: each one caps at least one more feature
        free = weights[~capped]
        scale = (mean_active - capped.sum()) / free.sum() if len(free) else 0.0
        p = torch.where(capped, 1.0, weights * scale)
        over = (p > 1) & ~capped
        if not over.any():
            return p.float()
        capped |= over


# --- the configurable generator -----------------------------------------------------------


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
        _check_int("n_features", self.n_features, 1)
        _check_int("d", self.d, 1)
        _check_mean_active(self.mean_active, self.n_features)
        require(self.frequency in FREQUENCIES, "frequency", self.frequency, f"one of {FREQUENCIES}")
        _check_nonnegative("zipf_exponent", self.zipf_exponent)
        require(self.magnitude in MAGNITUDES, "magnitude", self.magnitude, f"one of {MAGNITUDES}")
        scale = self.magnitude_scale
        require(is_real(scale) and scale > 0, "magnitude_scale", scale, "a finite number > 0")
        _check_coherence(self.coherence, self.d)
        _check_nonnegative("noise_std", self.noise_std)
        _check_nonnegative("offset_norm", self.offset_norm)
        _check_int("correlated_pairs", self.correlated_pairs, 0)
        _check_prob("pair_cofire_prob", self.pair_cofire_prob)
        _check_int("n_parents", self.n_parents, 0)
        _check_int("children_per_parent", self.children_per_parent, 0)
        n_kids, n_parents = self.children_per_parent, self.n_parents
        require(
            (n_kids == 0) == (n_parents == 0),
            "children_per_parent",
            n_kids,
            f"0 when n_parents is 0 and >= 1 otherwise (n_parents={n_parents})",
        )
        _check_prob("child_prob", self.child_prob)
        require(
            isinstance(self.exclusive_children, bool),
            "exclusive_children",
            self.exclusive_children,
            "a bool",
        )
        require(
            not self.exclusive_children or n_kids * self.child_prob <= 1 + 1e-9,
            "child_prob",
            self.child_prob,
            f"<= 1 / children_per_parent (children_per_parent={n_kids}) when exclusive_children",
        )
        _check_int("seed", self.seed, 0)
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
        self.dictionary = _random_dictionary(
            config.n_features, config.d, config.coherence, False, g
        ).to(self.device)
        self.parents, self.children, self.pairs = _feature_layout(config)
        base = _firing_probabilities(
            config.n_features, config.frequency, config.mean_active, config.zipf_exponent
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
        _check_int("n", n, 1)
        cfg = self.config
        g = self._stream if generator is None else _generator(generator)
        active = self._sample_active(n, g)  # [n, n_features] bool
        mags = cfg.magnitude_scale * _magnitudes(cfg.magnitude, active.shape, g)
        codes = torch.where(active, mags.clamp_min(_TINY), 0.0).to(self.device)
        x = codes @ self.dictionary + self.offset  # [n, d]
        if cfg.noise_std > 0:
            x = x + cfg.noise_std * torch.randn(n, cfg.d, generator=g).to(self.device)
        return SyntheticBatch(x, codes, self.dictionary)

    def batches(self, batch_size: int, seed: Seed) -> Iterator[Tensor]:
        """An endless, deterministic stream of ``x`` batches ``[batch_size, d]`` for training."""
        _check_int("batch_size", batch_size, 1)
        g = _generator(seed)

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


# --- toys from the literature -------------------------------------------------------------


def composed_features(
    n: int,
    *,
    d: int = 2,
    correlation: float = 0.0,
    one_hot_fraction: float = 0.0,
    generator: Seed,
    device: torch.device | str | None = None,
) -> ComposedFeatures:
    """The composed-features toy of Anders et al. (2024), "Sparse autoencoders find composed
    features in small toy models" (LessWrong).

    Two sets of mutually exclusive features, ``{x1, x2}`` and ``{y1, y2}``: each sample has
    exactly one ``x`` and one ``y`` (each chosen by a fair coin) with magnitudes in U(0, 1].
    The two magnitudes are coupled by a Gaussian copula: ``z_x ~ N(0, 1)``,
    ``z_y = r z_x + sqrt(1 - r^2) e`` with ``r = correlation``, magnitude ``= Phi(z)``. The
    marginals stay uniform and the magnitudes' Pearson correlation is
    ``(6 / pi) arcsin(r / 2)``: equal to ``r`` at -1, 0 and 1 and within 0.02 of it between
    (at ``r = 1`` the two magnitudes are equal, the post's "correlated" case).
    Exactly ``round(one_hot_fraction * n)`` samples, chosen at random, keep only one of the
    two sets (which one by a fair coin).

    Directions: for ``d = 2`` they are evenly spread as in the post, with the mutually
    exclusive features antipodal (x1 = e1, x2 = -e1, y1 = e2, y2 = -e2); for ``d > 2`` they
    are four random unit vectors.

    Returns ``ComposedFeatures(batch, composed)``: ``batch.codes [n, 4]`` and
    ``batch.dictionary [4, d]`` in the order x1, x2, y1, y2, and ``composed [4, d]`` =
    unit(x1+y1), unit(x1+y2), unit(x2+y1), unit(x2+y2).
    """
    _check_int("n", n, 1)
    _check_int("d", d, 2)
    ok = is_real(correlation) and -1 <= correlation <= 1
    require(ok, "correlation", correlation, "a number in [-1, 1]")
    _check_prob("one_hot_fraction", one_hot_fraction)
    g = _generator(generator)
    if d == 2:
        dictionary = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    else:
        dictionary = _random_dictionary(4, d, 0.0, False, g)
    codes = _composed_codes(n, correlation, one_hot_fraction, g)  # [n, 4]
    composed = F.normalize(dictionary[[0, 0, 1, 1]] + dictionary[[2, 3, 2, 3]], dim=1)
    dictionary, codes, composed = dictionary.to(device), codes.to(device), composed.to(device)
    return ComposedFeatures(SyntheticBatch(codes @ dictionary, codes, dictionary), composed)


def _composed_codes(n: int, r: float, one_hot_fraction: float, g: torch.Generator) -> Tensor:
    z_x = torch.randn(n, generator=g)
    z_y = r * z_x + math.sqrt(max(0.0, 1 - r * r)) * torch.randn(n, generator=g)
    mags = torch.special.ndtr(torch.stack([z_x, z_y], dim=1)).clamp_min(_TINY)  # [n, 2]
    keep = torch.ones(n, 2, dtype=torch.bool)  # [n, (x set, y set)]
    one_hot = torch.randperm(n, generator=g)[: round(one_hot_fraction * n)]
    keep[one_hot, torch.randint(2, (len(one_hot),), generator=g)] = False
    which = torch.randint(2, (n, 2), generator=g)  # 0 -> x1 / y1, 1 -> x2 / y2
    codes = torch.zeros(n, 4)
    rows = torch.arange(n)
    codes[rows, which[:, 0]] = mags[:, 0] * keep[:, 0]
    codes[rows, 2 + which[:, 1]] = mags[:, 1] * keep[:, 1]
    return codes


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
    _check_int("n", n, 1)
    _check_int("d", d, 2)
    _check_prob("parent_prob", parent_prob)
    _check_prob("child_prob_given_parent", child_prob_given_parent)
    g = _generator(generator)
    dictionary = _orthonormal_rows(2, d, g)
    parent = torch.rand(n, generator=g) < parent_prob
    child = parent & (torch.rand(n, generator=g) < child_prob_given_parent)
    codes = torch.stack([parent, child], dim=1).float()
    dictionary, codes = dictionary.to(device), codes.to(device)
    return SyntheticBatch(codes @ dictionary, codes, dictionary)
