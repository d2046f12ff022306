"""One seed of every experiment of chapter 02, and the claims' effects from all seeds.

    runs = map_seeds(partial(gap_run.run_part, params), gap_run.tasks(seeds))  # saelib.parallel
    tables = gap_run.collect(runs)
    effects = gap_run.claim_effects(tables, params)                  # claim id -> per seed

:func:`run_seed` draws the seed's data (:func:`problem`) and runs, on that seed only: the
three settings (:mod:`saelib.coding.gap`, lambdas chosen on validation), the ISTA/FISTA
iteration curve at the oracle's chosen lambda, the N sweep of setting b and ITO on a TopK
SAE's decoder (:mod:`saelib.coding.gap_views`), in three parts (``PARTS``, :func:`run_part`)
that can run in separate workers: a seed's part draws the same data and gives the same
records wherever it runs. Records are plain (picklable) dictionaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from saelib.claims import interval
from saelib.coding import gap, gap_views
from saelib.parallel import seed_parts
from saelib.toys.synthetic import SyntheticConfig, SyntheticData
from saelib.validation import require

TABLES = ("results", "curves", "iterations", "sweep", "topk")

__all__ = [
    "PAPER_C",
    "TABLES",
    "claim_effects",
    "collect",
    "late_loss_drop",
    "matched_flops_effect",
    "paper_table",
    "PARTS",
    "problem",
    "run_part",
    "run_seed",
    "tasks",
]


def problem(params: dict, seed: int, n: int | None = None, m: int | None = None,
            k: float | None = None) -> list:  # fmt: skip
    """The ``(train, val, test)`` split of ``seed``: ``x = s D`` with ``n`` (default
    ``n_features``) unit-norm Gaussian atoms in ``m`` (``d``) dimensions, Zipf firing
    frequencies with ``k`` (``mean_active``) active latents per sample on average and
    half-normal magnitudes; ``n_train``, ``n_val`` and ``n_test`` rows."""
    cfg = SyntheticConfig(
        n_features=params["n_features"] if n is None else n,
        d=params["d"] if m is None else m,
        mean_active=params["mean_active"] if k is None else k,
        frequency="zipf", zipf_exponent=params["zipf_exponent"], magnitude="halfnormal",
        seed=seed,
    )  # fmt: skip
    sizes = (params["n_train"], params["n_val"], params["n_test"])
    return gap.draw_splits(SyntheticData(cfg), sizes, seed, params["device"])


PARTS = ("both_unknown", "known", "views")
"""The parts of one seed's run, the longest first: setting c (with SAE+ITO and sparse
coding); settings a and b (with the oracle); the iteration curve, N sweep and ITO on TopK."""


def tasks(seeds: Sequence[int]) -> list[tuple[int, str]]:
    """``(seed, part)`` for every seed and part of ``PARTS``, the longest parts first, so that
    ``map_seeds(partial(run_part, params), tasks(seeds))`` keeps every worker busy."""
    return seed_parts(seeds, PARTS)


def run_part(params: dict, task: tuple[int, str]) -> dict[str, list[dict]]:
    """One part of ``PARTS`` on one seed, ``task = (seed, part)``: records of some of
    ``TABLES`` (:func:`collect` joins them)."""
    seed, part = task
    require(part in PARTS, "part", part, f"one of {list(PARTS)}")
    exp = gap.GapExperiment.from_params(params)
    split = problem(params, seed)
    if part == "known":
        rows, _ = gap.known_settings(exp, seed, split)
        return {"results": rows}
    if part == "both_unknown":
        rows, curves = gap.both_unknown(exp, seed, split)
        return {"results": rows, "curves": curves}
    lam = gap.oracle_lambda(exp, split)
    train, _, test = split
    iterations = gap_views.iteration_curve(
        train.dictionary, test.x, test.codes, lam / 2, params["ista_iters"]
    ).assign(seed=seed, **{"lambda": lam})
    grid = [(n, params["d"], params["mean_active"]) for n in sorted(params["sweep_n_features"])]
    sweep = gap_views.code_regression_sweep(
        exp, lambda s, n, m, k: problem(params, s, n, m, k), seed, grid
    )
    wide_train, _, wide_test = problem(
        params, seed, params["topk_n_features"], params["topk_d"], params["topk_mean_active"]
    )
    topk = gap_views.ito_on_topk(
        exp, wide_train.x, wide_test.x, params["topk_n_features"], params["topk_k"],
        params["topk_l0s"], seed,
    ).assign(seed=seed)  # fmt: skip
    tables = {"iterations": iterations, "sweep": sweep, "topk": topk}
    return {name: table.to_dict("records") for name, table in tables.items()}


def run_seed(params: dict, seed: int) -> dict[str, list[dict]]:
    """Every part of the chapter on ``seed``: records of each of ``TABLES``."""
    records: dict[str, list[dict]] = {}
    for part in PARTS:
        for name, rows in run_part(params, (seed, part)).items():
            records.setdefault(name, []).extend(rows)
    return records


def collect(runs: Sequence[dict]) -> dict[str, pd.DataFrame]:
    """The records of :func:`run_part` or :func:`run_seed` calls joined: one DataFrame per
    name of ``TABLES``, plus ``best`` (each method's row at its lambda chosen on validation,
    per seed and setting). Rows are sorted by seed (stable), so the order of the calls does
    not matter."""
    tables = {}
    for name in TABLES:
        frame = pd.DataFrame([r for one in runs for r in one.get(name, [])])
        require(len(frame) > 0, f"records of {name}", 0, "some (run every part)")
        tables[name] = frame.sort_values("seed", kind="stable").reset_index(drop=True)
    tables["best"] = gap.choose_lambda(tables["results"])
    return tables


def matched_flops_effect(baseline: pd.DataFrame, other: pd.DataFrame) -> float:
    """``other``'s MCC minus ``baseline``'s at the largest total FLOPs both curves reach.

    Each curve (columns ``flops`` and ``mcc``, one seed) is interpolated linearly in log FLOPs;
    the budget is the smaller of the two curves' largest FLOPs. NaN when the curves' FLOP
    ranges do not overlap (the budget is below one curve's cheapest point).
    """
    curves = [c.sort_values("flops") for c in (baseline, other)]
    budget = min(float(c["flops"].max()) for c in curves)
    if any(budget < float(c["flops"].min()) for c in curves):
        return math.nan
    at = [
        float(np.interp(math.log(budget), np.log(c["flops"].to_numpy(float)), c["mcc"]))
        for c in curves
    ]
    return at[1] - at[0]


def _per_seed(best: pd.DataFrame, setting: str, method: str) -> pd.Series:
    part = best[(best["setting"] == setting) & (best["method"] == method)]
    return part.set_index("seed")["mcc"]


def claim_effects(tables: dict[str, pd.DataFrame], params: dict) -> dict[str, list[float]]:
    """Each claim of ``saelib/schemas/02_amortisation_gap.yaml``: its effect on every seed
    (in seed order; NaN where a seed cannot measure it), oriented as its metric says."""
    best, seeds = tables["best"], sorted(tables["results"]["seed"].unique())
    A, B, C = gap.KNOWN_DICTIONARY, gap.KNOWN_CODES, gap.BOTH_UNKNOWN

    def diff(setting, method, baseline, setting_b=None):
        other = _per_seed(best, setting, method)
        base = _per_seed(best, setting_b or setting, baseline)
        return [float(other.get(s, math.nan) - base.get(s, math.nan)) for s in seeds]

    curves = gap.flop_curves(tables["curves"], best)
    matched = []
    for s in seeds:
        one = curves[curves["seed"] == s]
        sae, sc = one[one["method"] == gap.SAE], one[one["method"] == gap.SPARSE_CODING]
        matched.append(matched_flops_effect(sae, sc) if len(sae) and len(sc) else math.nan)

    sweep = tables["sweep"]
    gap_n = sweep.assign(gap=sweep["oracle"] - sweep["SAE"]).sort_values("N")
    grows = [float(g["gap"].iloc[-1] - g["gap"].iloc[0]) for _, g in gap_n.groupby("seed")]

    it = tables["iterations"]
    fista_last = it[(it["method"] == "FISTA") & (it["iterations"] == it["iterations"].max())]
    fista_last = fista_last.set_index("seed")["mcc"]
    sae_a = _per_seed(best, A, gap.SAE)

    topk = tables["topk"]
    at_k = topk[topk["l0"] == params["topk_k"]].pivot(index="seed", columns="method",
                                                     values="fvu")  # fmt: skip
    lista = gap.lista_name(4)
    require(len(grows) == len(seeds), "sweep seeds", len(grows), f"{len(seeds)} (one per seed)")
    return {
        "gap_known_dictionary": diff(A, gap.ORACLE, gap.SAE),
        "mlp_beats_sae_supervised": diff(B, gap.MLP_ONE, gap.SAE),
        "mlp_beats_sae": diff(C, gap.MLP_ONE, gap.SAE),
        "sparse_coding_beats_sae": diff(C, gap.SPARSE_CODING, gap.SAE),
        "sparse_coding_beats_sae_matched_flops": matched,
        "ito_beats_sae_encoder": diff(C, gap.ITO, gap.SAE),
        "lista_beats_sae": diff(C, lista, gap.SAE) if lista in set(best["method"]) else
        [math.nan] * len(seeds),
        "mp_sae_beats_sae": diff(C, gap.MP_SAE, gap.SAE),
        "gap_grows_with_n": grows,
        "iterating_beats_encoder": [float(fista_last[s] - sae_a[s]) for s in seeds],
        "ito_beats_topk_encoder": [
            float(at_k.loc[s, "TopK encoder"] - at_k.loc[s, "gradient pursuit"]) for s in seeds
        ],
    }  # fmt: skip


PAPER_C = {gap.SAE: 0.57, gap.MLP_ONE: 0.60, gap.SPARSE_CODING: 0.69}
"""O'Neill et al.'s code MCC in setting (c) (their table), by our method names."""


def paper_table(best: pd.DataFrame) -> pd.DataFrame:
    """Setting (c) beside the paper: per method of ``PAPER_C``, the paper's MCC and ours
    (mean over seeds, 95% t interval, n)."""
    rows = []
    for method, paper in PAPER_C.items():
        mean, low, high, n = interval(_per_seed(best, gap.BOTH_UNKNOWN, method))
        rows.append({"method": method, "paper": paper, "ours": mean, "low": low, "high": high,
                     "n": n})  # fmt: skip
    return pd.DataFrame(rows).set_index("method").round(3)


def late_loss_drop(curves: pd.DataFrame) -> pd.DataFrame:
    """How far each family's validation loss still falls late in training: per method of the
    setting-c ``curves`` (one lambda per seed), the mean over seeds of ``1 - loss(end) /
    loss(half)``, ``half`` the last measured step at or before half the run."""
    part = curves.dropna(subset=["val_loss"])
    drops = []
    for (method, seed), one in part.groupby(["method", "seed"], sort=False):
        one = one.set_index("step")["val_loss"].sort_index()
        end = one.index.max()
        half = one.index[one.index <= end / 2].max()
        drops.append({"method": method, "seed": seed, "drop": 1 - one[end] / one[half]})
    return pd.DataFrame(drops).groupby("method", sort=False)["drop"].mean()
