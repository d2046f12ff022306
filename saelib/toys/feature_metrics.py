"""How a learned dictionary relates to known features: composites, absorption, hedging.

Pure functions on a true dictionary ``[n_true, d]`` and a learned one ``[n_learned, d]``
(atoms as rows, e.g. ``sae.W_dec``), plus true and learned codes ``[n, n_true]``,
``[n, n_learned]`` on the same samples. Computed in float64, no gradients.

- ``composites``: which learned atoms are a non-negative mix of two true atoms rather than
  one (Till 2024, "Do sparse autoencoders find true features?"; Anders et al. 2024).
- ``absorption``: how often a parent's latent stays silent when a child fires (Chanin et
  al. 2024, "A is for Absorption").
- ``hedging``: how much of a child's direction a parent's latent carries (Chanin et al.
  2025, "Feature hedging").
- ``composite_kinds``: which kinds of feature pair (co-occurring, parent-child, ...) the
  composites of several SAEs merge.
- ``nearest_neighbour_cos``: each atom's largest |cos| to another atom (the quantity the
  orthogonality penalty pushes down).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from saelib.validation import check_real, require

PairKind = Literal["co-occurring", "parent-child", "siblings", "unrelated"]
PAIR_KINDS: tuple[str, ...] = get_args(PairKind)


class Composites(NamedTuple):
    """Per learned atom: is it a composite of two true atoms? (see :func:`composites`)."""

    fraction: float  # fraction of the considered atoms that are composites
    is_composite: Tensor  # [n_learned] bool (False for atoms left out by ``alive``)
    single_cos: Tensor  # [n_learned] best |cos| to one true atom
    pair_cos: Tensor  # [n_learned] best cos to a non-negative mix of two true atoms
    pair: Tensor  # [n_learned, 2] long, the best pair (-1 if none has both weights > 0)


class Absorption(NamedTuple):
    """Parent latents that stay silent when their child fires (see :func:`absorption`)."""

    rate: float  # mean of per_child over pairs with samples; nan if none
    per_child: Tensor  # [P, C] P(parent latent silent | child active), nan without samples
    parent_alone_miss: Tensor  # [P] P(parent latent silent | parent active, no child active)


def _unit_rows(t: Tensor, name: str) -> Tensor:
    require(t.ndim == 2 and t.shape[0] >= 1 and t.shape[1] >= 1, name, list(t.shape), "2-D")
    require(bool(torch.isfinite(t).all()), name, "a tensor with NaN or inf", "finite")
    return F.normalize(t.detach().cpu().double(), dim=1)


def _same_width(true_dict: Tensor, learned_dict: Tensor) -> tuple[Tensor, Tensor]:
    t, l = _unit_rows(true_dict, "true_dict"), _unit_rows(learned_dict, "learned_dict")
    require(t.shape[1] == l.shape[1], "learned_dict", list(l.shape), f"[*, {t.shape[1]}]")
    return t, l


def nearest_neighbour_cos(atoms: Tensor) -> Tensor:
    """``max_{j != i} |cos(a_i, a_j)|`` for each row of ``atoms [n, d]`` (n >= 2); ``[n]``."""
    a = _unit_rows(atoms, "atoms")
    require(a.shape[0] >= 2, "atoms", list(atoms.shape), "at least 2 rows")
    cos = (a @ a.T).abs().fill_diagonal_(-1.0)
    return cos.max(dim=1).values.float()


def composites(
    true_dict: Tensor,
    learned_dict: Tensor,
    *,
    single_threshold: float = 0.9,
    pair_threshold: float = 0.95,
    alive: Tensor | None = None,
    candidates: int | None = 32,
) -> Composites:
    """Which learned atoms are composites of two true features rather than one.

    For a unit learned atom ``l`` and unit true atoms ``t_i``: ``single = max_i |cos(l, t_i)|``;
    for each pair ``(i, j)`` the least-squares fit ``l ~ a t_i + b t_j`` (solved with the 2x2
    Gram matrix; pairs of (anti)parallel atoms are skipped) counts when ``a > 0`` and ``b > 0``,
    and ``pair`` is the largest ``cos(l, a t_i + b t_j)`` over those pairs (the norm of the
    projection). ``l`` is a **composite** when ``single < single_threshold`` and
    ``pair >= pair_threshold``: no single feature explains it, a non-negative mix of two does.
    The fraction is over the atoms with ``alive[j]`` true (all atoms if ``alive`` is None).

    Pairs are searched among each learned atom's ``candidates`` true atoms of largest |cos|
    (all pairs when ``candidates`` is None or >= n_true): a pair that explains an atom at
    cos >= 0.95 has at least one large cosine, and in practice both (an approximation for
    strongly coherent dictionaries). Cost ``O(n_learned * candidates^2)``.
    """
    t, l = _same_width(true_dict, learned_dict)
    check_real("single_threshold", single_threshold, 0, 1, open_low=True)
    check_real("pair_threshold", pair_threshold, 0, 1, open_low=True)
    if alive is None:
        alive = torch.ones(l.shape[0], dtype=torch.bool)
    require(alive.shape == (l.shape[0],), "alive", list(alive.shape), f"[{l.shape[0]}] bool")
    alive = alive.cpu().bool()
    c = l @ t.T  # [m, n] signed cosines
    single = c.abs().max(dim=1).values
    n = t.shape[0]
    k = n if candidates is None else min(n, candidates)
    idx = c.abs().topk(k, dim=1).indices  # [m, k] candidate atoms per learned atom
    ck = c.gather(1, idx)  # [m, k]
    g = t @ t.T  # [n, n]
    gk = g[idx[:, :, None], idx[:, None, :]]  # [m, k, k] Gram of each atom's candidates
    best, arg = zip(
        *(_best_pair(*part) for part in zip(ck.split(256), gk.split(256), strict=True)),
        strict=True,
    )
    best, arg = torch.cat(best), torch.cat(arg)  # arg indexes the [k, k] candidate grid
    pair = torch.stack([idx.gather(1, (arg // k)[:, None]), idx.gather(1, (arg % k)[:, None])], 1)
    pair = pair[:, :, 0].sort(dim=1).values  # (i, j) with i < j
    pair[best < 0] = -1
    pair_cos = best.clamp_min(0)
    is_comp = (single < single_threshold) & (pair_cos >= pair_threshold) & alive
    frac = is_comp.sum().item() / max(int(alive.sum()), 1)
    return Composites(frac, is_comp, single.float(), pair_cos.float(), pair)


def _best_pair(c: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Best non-negative two-atom fit for cosines ``c [m, k]`` and Gram matrices ``g [m, k, k]``:
    its cos ``[m]`` (-1 if no pair qualifies) and flat index into the ``[k, k]`` grid ``[m]``."""
    det = 1 - g.pow(2)  # Gram determinant of each unit pair
    ok = det > 1e-9  # skips (anti)parallel pairs and the diagonal
    inv_det = torch.where(ok, 1 / det.clamp_min(1e-9), 0.0)
    ci, cj = c[:, :, None], c[:, None, :]  # [m, k, 1], [m, 1, k]
    a = (ci - g * cj) * inv_det  # weight of t_i  [m, k, k]
    b = (cj - g * ci) * inv_det  # weight of t_j
    proj2 = a * ci + b * cj  # squared norm of the projection of l onto span(t_i, t_j)
    valid = ok & (a > 0) & (b > 0)
    score = torch.where(valid, proj2.clamp(0, 1).sqrt(), -1.0).flatten(1)  # [m, k * k]
    return score.max(dim=1)


def parent_latents(true_dict: Tensor, learned_dict: Tensor, parents: Tensor) -> Tensor:
    """The learned atom with the largest cosine to each parent atom, ``[P]`` long.

    Signed cosine: a latent whose atom points against the parent cannot stand for it.
    """
    t, l = _same_width(true_dict, learned_dict)
    return (t[parents.cpu()] @ l.T).argmax(dim=1)


def absorption(
    true_codes: Tensor,
    learned_codes: Tensor,
    parents: Tensor,
    children: Tensor,
    parent_latent: Tensor,
) -> Absorption:
    """Absorption: how often a parent's latent is silent while one of its children fires.

    ``true_codes [n, n_true]``, ``learned_codes [n, n_learned]`` on the same samples;
    ``parents [P]`` and ``children [P, C]`` index true features (child ``children[p, c]``
    fires only with ``parents[p]``); ``parent_latent [P]`` the learned latent standing for
    each parent (e.g. :func:`parent_latents`). ``per_child[p, c] = P(f[:, parent_latent[p]]
    == 0 | child c active)``. An SAE whose child latent has absorbed the parent direction
    leaves the parent latent off exactly then; ``parent_alone_miss`` is the same rate on
    samples where the parent fires with no child, the baseline to compare against.
    """
    require(true_codes.ndim == 2, "true_codes", list(true_codes.shape), "[n, n_true]")
    require(
        learned_codes.ndim == 2 and learned_codes.shape[0] == true_codes.shape[0],
        "learned_codes",
        list(learned_codes.shape),
        f"[{true_codes.shape[0]}, n_learned]",
    )
    require(
        children.ndim == 2 and children.shape[0] == parents.shape[0],
        "children",
        list(children.shape),
        f"[{parents.shape[0]}, C]",
    )
    require(parent_latent.shape == parents.shape, "parent_latent", list(parent_latent.shape),
            f"[{parents.shape[0]}]")  # fmt: skip
    active = true_codes.detach().cpu() != 0  # [n, n_true]
    silent = learned_codes.detach().cpu()[:, parent_latent.cpu()] == 0  # [n, P]
    kids = active[:, children.cpu()]  # [n, P, C]
    n_kid = kids.sum(0).double()  # [P, C]
    missed = (kids & silent[:, :, None]).sum(0).double()
    per_child = torch.where(n_kid > 0, missed / n_kid.clamp_min(1), float("nan"))
    alone = active[:, parents.cpu()] & ~kids.any(2)  # [n, P]
    n_alone = alone.sum(0).double()
    alone_miss = torch.where(
        n_alone > 0, (alone & silent).sum(0).double() / n_alone.clamp_min(1), float("nan")
    )
    seen = ~per_child.isnan()
    rate = per_child[seen].mean().item() if seen.any() else float("nan")
    return Absorption(rate, per_child.float(), alone_miss.float())


def hedging(
    true_dict: Tensor,
    learned_dict: Tensor,
    parents: Tensor,
    children: Tensor,
    parent_latent: Tensor,
) -> Tensor:
    """How much of each child's direction its parent's latent carries, ``[P, C]``.

    The parent latent's atom ``w`` is fitted by least squares on the parent and child atoms,
    ``w ~ alpha t_parent + beta t_child``; hedging is ``beta / alpha``: 0 for a clean parent
    latent, 0.3 for ``w = t_parent + 0.3 t_child``. Signed: a negative value means the child
    direction was subtracted. ``nan`` where ``alpha <= 0`` (the latent is not the parent's).
    """
    t, l = _same_width(true_dict, learned_dict)
    w = l[parent_latent.cpu()]  # [P, d]
    tp = t[parents.cpu()]  # [P, d]
    tc = t[children.cpu()]  # [P, C, d]
    basis = torch.stack([tp[:, None].expand_as(tc), tc], dim=-1)  # [P, C, d, 2]
    target = w[:, None, :, None].expand(*tc.shape, 1)  # [P, C, d, 1]
    coef = torch.linalg.lstsq(basis, target).solution[..., 0]  # [P, C, 2]
    alpha, beta = coef.unbind(-1)
    return torch.where(alpha > 1e-9, beta / alpha.clamp_min(1e-9), float("nan")).float()


def pair_kinds(pair: Tensor, pairs: Tensor, parents: Tensor, children: Tensor) -> list[PairKind]:
    """Name the relation of each true-feature pair ``pair [m, 2]`` (rows of -1 are skipped):

    ``"co-occurring"`` (a row of ``pairs [K, 2]``), ``"parent-child"``, ``"siblings"``
    (children of one parent, from ``parents [P]``, ``children [P, C]``), else ``"unrelated"``
    (``PAIR_KINDS``). Returns one name per row with a pair, in order.
    """
    linked = {frozenset(p) for p in pairs.tolist()}
    family = {frozenset((p, c)) for p, row in zip(parents.tolist(), children.tolist(), strict=True)
              for c in row}  # fmt: skip
    sibs = {frozenset((a, b)) for row in children.tolist() for a in row for b in row if a != b}
    names = []
    for i, j in pair.tolist():
        if i < 0:
            continue
        key = frozenset((i, j))
        names.append(
            "co-occurring" if key in linked else "parent-child" if key in family
            else "siblings" if key in sibs else "unrelated"
        )  # fmt: skip
    return names


def composite_kinds(
    true_dict: Tensor,
    learned_dicts: Iterable[Tensor],
    pairs: Tensor,
    parents: Tensor,
    children: Tensor,
) -> dict[str, int]:
    """How many composite latents of ``learned_dicts`` mix each kind of true-feature pair.

    For each learned dictionary, the composites of :func:`composites` (default thresholds)
    and the relation of their two true features (:func:`pair_kinds`), counted over all of
    them; every kind of ``PAIR_KINDS`` is a key, in that order.
    """
    counts = dict.fromkeys(PAIR_KINDS, 0)
    for learned in learned_dicts:
        comp = composites(true_dict, learned)
        for kind in pair_kinds(comp.pair[comp.is_composite], pairs, parents, children):
            counts[kind] += 1
    return counts
