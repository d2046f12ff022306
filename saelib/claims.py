"""Declared claims, intervals over seeds and verdicts: how a chapter states what it tests.

A chapter declares its claims before its experiment, in the ``claims:`` section of its
schema file (``saelib/schemas/NN_chapter.yaml``)::

    claims:
      - id: topk_beats_relu
        statement: TopK reaches a lower FVU than ReLU at the same L0
        source: Gao et al. 2024, Scaling and evaluating sparse autoencoders, arXiv:2406.04093
        metric: ReLU's FVU (interpolated at TopK's L0) minus TopK's, mean over matched points
        direction: greater        # the claim says: effect > threshold
        threshold: 0.01           # the smallest effect that counts
        comparison: paired over seeds

After the runs, each claim gets one effect per seed (oriented as its metric says) and

    table = verdicts(claims, {"topk_beats_relu": [0.03, 0.02, 0.04, 0.05, 0.03], ...})

gives the mean effect, its 95% Student-t interval over seeds
``mean +- t_{0.975, n-1} * sd / sqrt(n)``, ``n``, and the verdict:

- **supported**: the whole interval lies on the claimed side of the threshold;
- **contradicted**: the whole interval lies on the other side (the effect that would count
  is credibly absent, or reversed);
- **inconclusive**: the interval contains the threshold, or fewer than two seeds gave a
  finite effect.

For a claim of superiority the threshold is the smallest effect that counts (e.g. 0.01
FVU); for "at least as good as" (non-inferiority) it is minus the margin. A t interval
rather than a bootstrap: with 5 seeds a bootstrap interval is too narrow (it cannot
reach beyond the observed values).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal, get_args

import numpy as np
import pandas as pd
from scipy import stats

from saelib.validation import check_choice, check_real, require

Direction = Literal["greater", "less"]
VERDICTS = ("supported", "contradicted", "inconclusive")
CONFIDENCE = 0.95

__all__ = [
    "CONFIDENCE",
    "VERDICTS",
    "Claim",
    "Interval",
    "chosen_on_other_seeds",
    "claims_table",
    "glue_values",
    "interval",
    "load",
    "rounded",
    "verdict",
    "verdicts",
]


@dataclass(frozen=True)
class Claim:
    """One declared claim: what is tested, where it comes from and what would count."""

    id: str
    """Short name, a Python identifier (glued values are named after it)."""
    statement: str
    """The claim in one sentence, as its source makes it."""
    source: str
    """Who makes the claim, with a reference (paper and arXiv id, post and address)."""
    metric: str
    """How one seed's effect is computed, oriented so that ``direction`` supports the claim."""
    direction: Direction
    """``greater``: the claim says effect > threshold; ``less``: effect < threshold."""
    threshold: float
    """The smallest effect that counts (minus the margin, for non-inferiority)."""
    comparison: str = "paired over seeds"
    """How the sides are compared, e.g. ``paired over seeds`` (both sides share each seed)."""

    def __post_init__(self) -> None:
        require(self.id.isidentifier(), "Claim.id", self.id, "a Python identifier")
        for name in ("statement", "source", "metric", "comparison"):
            require(bool(getattr(self, name).strip()), f"Claim {self.id}: {name}",
                    getattr(self, name), "a non-empty string")  # fmt: skip
        check_choice(f"Claim {self.id}: direction", self.direction, get_args(Direction))
        check_real(f"Claim {self.id}: threshold", self.threshold)

    @property
    def counts_if(self) -> str:
        """What the effect must be for the claim to count, e.g. ``> 0.01``."""
        return f"{'>' if self.direction == 'greater' else '<'} {self.threshold:g}"


def load(declarations: Iterable[Mapping]) -> list[Claim]:
    """Claims from their declarations (the ``claims:`` list of a chapter's schema file).

    Refuses unknown or missing keys and repeated ids, naming the claim.
    """
    known = {f.name for f in fields(Claim)}
    claims = []
    for i, entry in enumerate(declarations):
        name = entry.get("id", f"#{i}")
        unknown = sorted(set(entry) - known)
        require(not unknown, f"claim {name}", unknown, f"declared with keys from {sorted(known)}")
        try:
            claims.append(Claim(**entry))
        except TypeError as err:  # a required key is missing
            raise ValueError(f"claim {name}: {err}") from None
    ids = [c.id for c in claims]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    require(not repeated, "claim ids", repeated, "unique")
    return claims


def claims_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """The Claims table a chapter shows before any result: one row per claim."""
    return pd.DataFrame(
        [
            {
                "id": c.id,
                "claim": c.statement,
                "source": c.source,
                "effect (per seed)": c.metric,
                "counts if": c.counts_if,
                "comparison": c.comparison,
            }
            for c in claims
        ]  # fmt: skip
    ).set_index("id")


def interval(
    samples: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` of the finite ``samples``: the Student-t interval of the mean.

    With fewer than two finite samples the bounds are NaN; with no spread they equal the mean.
    """
    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def verdict(claim: Claim, low: float, high: float) -> str:
    """Supported, contradicted or inconclusive: where ``[low, high]`` lies against the threshold."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    above, below = low > claim.threshold, high < claim.threshold
    if claim.direction == "less":
        above, below = below, above
    return "supported" if above else "contradicted" if below else "inconclusive"


@dataclass(frozen=True)
class Interval:
    """An effect whose interval is not a t interval over units (e.g. a bootstrap test):
    given to :func:`verdicts` in place of the per-seed effects."""

    effect: float
    low: float
    high: float
    n: int


class Effects:
    """Collects each claim's per-seed effects, one :meth:`add` per claim and seed.

    Non-finite values are kept as given: NaN marks a seed that could not measure a claim,
    which :func:`verdicts` leaves out of ``n``. A claim never added is simply absent from
    :meth:`to_dict`, and :func:`verdicts` then raises naming it; the orientation (larger
    means "more so" as the claim's metric says) is the caller's, as in the schema.
    With ``claims`` given, a name that is not a declared claim id is refused at once.
    """

    def __init__(self, claims: Sequence[Claim] | None = None) -> None:
        self._ids = None if claims is None else {c.id for c in claims}
        self._out: dict[str, list[float]] = {}

    def add(self, name: str, value: float) -> None:
        """Append ``float(value)`` to claim ``name``'s effects (one call per seed)."""
        if self._ids is not None:
            require(
                name in self._ids, "effect name", name, f"a declared claim id {sorted(self._ids)}"
            )
        self._out.setdefault(name, []).append(float(value))

    def to_dict(self) -> dict[str, list[float]]:
        """Claim id -> effects in the order added, as :func:`verdicts` consumes them."""
        return {k: list(v) for k, v in self._out.items()}


def verdicts(
    claims: Sequence[Claim], effects: Mapping[str, Sequence[float] | Interval]
) -> pd.DataFrame:
    """One row per claim: effect (mean over seeds), low, high (95% t interval), n, verdict.

    ``effects`` maps every claim id to its per-seed effects (NaN where a seed could not
    measure it: it is left out of ``n``), or to an :class:`Interval` computed otherwise
    (the claim's ``comparison`` says how). A claim without effects, or effects for an
    undeclared claim, is an error: the chapter and its declarations disagree.
    """
    ids = [c.id for c in claims]
    missing, undeclared = sorted(set(ids) - set(effects)), sorted(set(effects) - set(ids))
    require(not missing, "effects for the declared claims", missing, "given (none missing)")
    require(not undeclared, "effects", undeclared, "only for declared claims")
    rows = []
    for claim in claims:
        given = effects[claim.id]
        if isinstance(given, Interval):
            mean, low, high, n = given.effect, given.low, given.high, given.n
        else:
            mean, low, high, n = interval(given)
        rows.append({"id": claim.id, "verdict": verdict(claim, low, high), "effect": mean,
                     "low": low, "high": high, "n": n, "counts if": claim.counts_if})  # fmt: skip
    return pd.DataFrame(rows).set_index("id")


def chosen_on_other_seeds(gains: pd.DataFrame) -> pd.Series:
    """Per seed, the gain of the option chosen on the *other* seeds (leave one seed out).

    ``gains`` holds one row per seed and one column per option (e.g. a penalty's
    coefficient and power), NaN where an option has no value. For seed ``s`` the option
    with the largest mean gain over the other seeds is chosen (NaN ignored; ties to the
    first column) and its gain at ``s`` returned, so no seed's effect is chosen on that
    seed itself: an honest "best of a sweep" where there is no separate validation data.
    Returns a Series indexed like ``gains``: NaN where no option has a value on the
    other seeds, so NaN throughout for a single seed (its verdict is then inconclusive).
    """
    values = gains.to_numpy(dtype=float)
    out = []
    for i in range(len(values)):
        others = np.delete(values, i, axis=0)
        counts = np.isfinite(others).sum(axis=0)
        means = np.where(counts > 0, np.nansum(others, axis=0) / np.maximum(counts, 1), -np.inf)
        out.append(values[i, int(np.argmax(means))] if np.isfinite(means).any() else math.nan)
    return pd.Series(out, index=gains.index, name="chosen_on_other_seeds")


def rounded(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The :func:`verdicts` table for printing: effect and interval rounded to ``digits``
    (a regression figure must not flip between ``-0.00`` and ``0.00``)."""
    columns = ["effect", "low", "high"]
    return table.assign(**{c: table[c].round(digits) + 0.0 for c in columns})


def glue_values(table: pd.DataFrame) -> dict[str, object]:
    """Plain values to glue from a :func:`verdicts` table: ``<id>_verdict``, ``<id>_effect``,
    ``<id>_low``, ``<id>_high`` and ``<id>_n`` for every claim."""
    values: dict[str, object] = {}
    for claim_id, row in table.iterrows():
        values[f"{claim_id}_verdict"] = str(row["verdict"])
        for column in ("effect", "low", "high"):
            values[f"{claim_id}_{column}"] = float(row[column])
        values[f"{claim_id}_n"] = int(row["n"])
    return values
