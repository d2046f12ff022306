"""Chapter 04's experiment: correlated, rare and hierarchical features, one seed at a time.

For one seed, :func:`run_task` (in five parts, see ``PARTS``) draws the data (Zipf
frequencies, co-firing pairs, parents with exclusive children), trains SAEs and scores each
against the true features (:func:`score_run`):

- the **architecture sweep** at ``d_sae = n_features``: ReLU, tied ReLU, TopK and JumpReLU,
  each over its own sparsity knob (a frontier each);
- **nesting**: Matryoshka BatchTopK against BatchTopK over ``topk_ks`` (``NESTING``);
- the **orthogonality sweep**: ReLU at L1 ``l1`` with the nearest-neighbour penalty at every
  coefficient of ``ortho_coeffs`` and both ``ortho_powers``;
- **widths**: ReLU (L1 ``l1``) and TopK (``topk_k``) at the two ``widths``, with the MMCS of
  random dictionaries of each width (chance); and the one-latent **hedging toy**;
- **probes** (``saelib.toys.ideal_probe``): labels from the true features, probed on the true
  codes (the ideal SAE), on x (dense) and on the latents of ReLU, TopK and JumpReLU.

:func:`effects` turns the seeds' tables into one effect per seed for each claim the chapter
declares (``saelib/schemas/04_correlated_features.yaml``). Seeds and parts run in worker
processes through :func:`saelib.parallel.map_seeds`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

from saelib import metrics
from saelib.claims import Effects, chosen_on_other_seeds
from saelib.data import TensorBatches
from saelib.evaluation import Run, frontier_gap, one_row, sweep
from saelib.parallel import seed_parts
from saelib.saes import SAE, SAEConfig, inference
from saelib.saes.matryoshka import prefix_widths
from saelib.toys import feature_metrics as fm
from saelib.toys.absorption import chanin_absorption
from saelib.toys.dictionaries import chance_mmcs
from saelib.toys.ground_truth import Truth, score, train_and_score
from saelib.toys.hedging import eigenvector_hedging, hedging_toy
from saelib.toys.ideal_probe import any_of_labels, feature_labels, probe_coders
from saelib.toys.synthetic import SyntheticConfig, SyntheticData
from saelib.training import TrainConfig

__all__ = [
    "ARCHITECTURES",
    "NESTING",
    "PARTS",
    "CorrelatedExperiment",
    "chance_mmcs",
    "collect",
    "effects",
    "orthogonality_table",
    "reference_at",
    "related_share",
    "run_task",
    "score_run",
    "tasks",
]

ARCHITECTURES = ("ReLU", "ReLU tied", "TopK", "JumpReLU")
"""The variants of the architecture sweep, each over its own sparsity knob."""
NESTING = ("BatchTopK", "Matryoshka")
"""Matryoshka BatchTopK against BatchTopK, both over ``topk_ks``: their own comparison, not
pooled into the architecture sweep's claims."""
PARTS = ("orthogonality", "relu and tied", "topk and jumprelu", "widths, toy and probes",
         "batchtopk and matryoshka")  # fmt: skip
"""A seed's work in five parts, listed costliest first (``seed_parts`` submits them in that
order), so that workers stay busy."""
SINGLE_KINDS = ("parent", "child", "co-occurring", "rare")
"""Kinds of single-feature probing labels (``probe_per_kind`` features of each)."""
MATCH = 0.9
"""A latent stands for a true feature when their |cos| is at least this (the composites'
single-feature threshold, ``feature_metrics.composites``)."""


@dataclass(frozen=True)
class CorrelatedExperiment:
    """The chapter's settings (its parameters of the same names)."""

    n_features: int
    d: int
    mean_active: float
    zipf_exponent: float
    correlated_pairs: int
    pair_cofire_prob: float
    n_parents: int
    children_per_parent: int
    child_prob: float
    n_train: int
    n_eval: int
    n_steps: int
    batch_size: int
    lr: float
    relu_l1: Sequence[float]
    topk_ks: Sequence[int]
    jumprelu_l0: Sequence[float]
    jumprelu_bandwidth: float
    l1: float
    topk_k: int
    jumprelu_coeff: float
    ortho_coeffs: Sequence[float]
    ortho_powers: Sequence[float]
    ortho_claim_coeff: float
    widths: Sequence[float]
    chance_draws: int
    hedging_d: int
    hedging_child_prob: float
    hedging_l1: float
    probe_n: int
    probe_per_kind: int
    probe_or_size: int
    probe_ks: Sequence[int]
    device: str = "cpu"

    @classmethod
    def from_params(cls, params: dict) -> CorrelatedExperiment:
        """The experiment from a chapter's checked parameters (other names are ignored)."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})

    def d_sae(self, width: float = 1.0) -> int:
        return int(width * self.n_features)

    def data(self, seed: int) -> SyntheticData:
        return SyntheticData(SyntheticConfig(
            n_features=self.n_features, d=self.d, mean_active=self.mean_active,
            frequency="zipf", zipf_exponent=self.zipf_exponent,
            correlated_pairs=self.correlated_pairs, pair_cofire_prob=self.pair_cofire_prob,
            n_parents=self.n_parents, children_per_parent=self.children_per_parent,
            child_prob=self.child_prob, exclusive_children=True, seed=seed))  # fmt: skip

    def train_config(self, coeff: float, **kw) -> TrainConfig:
        return TrainConfig(n_steps=self.n_steps, lr=self.lr, lr_decay_steps=self.n_steps // 5,
                           sparsity_coeff=coeff, sparsity_warmup_steps=self.n_steps // 10,
                           device=self.device, progress=False, **kw)  # fmt: skip

    def run(self, seed: int, variant: str, knob: float, width: float = 1.0, **labels) -> Run:
        """One run of ``variant`` (a name of ``ARCHITECTURES``, or ``"ReLU orth."`` with
        ``power`` and ``coeff`` labels) at sparsity ``knob`` and ``width``."""
        arch = {"TopK": "topk", "JumpReLU": "jumprelu", "BatchTopK": "batchtopk",
                "Matryoshka": "matryoshka"}.get(variant, "relu")  # fmt: skip
        kw: dict = {}
        if arch in ("topk", "batchtopk", "matryoshka"):
            kw["k"] = int(knob)
        if arch == "matryoshka":
            kw["matryoshka_widths"] = prefix_widths(self.d_sae(width))
        if arch == "jumprelu":
            kw |= {"bandwidth": self.jumprelu_bandwidth, "init_threshold": self.jumprelu_bandwidth}
        cfg = SAEConfig(d_in=self.d, d_sae=self.d_sae(width), architecture=arch, seed=seed,
                        tied=variant == "ReLU tied", **kw)  # fmt: skip
        coeff = 0.0 if "k" in kw else float(knob)
        extra = {}
        if variant == "ReLU orth.":
            extra = {"orthogonality_coeff": labels["coeff"], "orthogonality_power": labels["power"]}
        row = {"variant": variant, "knob": knob, "width": width, "seed": seed} | labels
        return Run(cfg, self.train_config(coeff, **extra), row)

    def runs(self, seed: int, part: str) -> list[Run]:
        """The training runs of one part (``PARTS``; the toy and the probes train nothing)."""
        if part == "orthogonality":
            return [self.run(seed, "ReLU orth.", self.l1, power=p, coeff=c)
                    for p in self.ortho_powers for c in self.ortho_coeffs]  # fmt: skip
        knobs = {"ReLU": self.relu_l1, "ReLU tied": self.relu_l1, "TopK": self.topk_ks,
                 "JumpReLU": self.jumprelu_l0}  # fmt: skip
        if part in PARTS[1:3]:
            names = ARCHITECTURES[:2] if part == PARTS[1] else ARCHITECTURES[2:]
            return [self.run(seed, v, k) for v in names for k in knobs[v]]
        if part == PARTS[4]:
            return [self.run(seed, v, k) for v in NESTING for k in self.topk_ks]
        return [self.run(seed, v, knob, w) for w in self.widths
                for v, knob in (("ReLU", self.l1), ("TopK", self.topk_k))]  # fmt: skip

    def probed(self) -> dict[str, float]:
        """The variant and knob whose latents the probes read (width 1)."""
        return {"ReLU": self.l1, "TopK": self.topk_k, "JumpReLU": self.jumprelu_coeff}

    def labels(self, data: SyntheticData, codes: torch.Tensor) -> tuple[dict, dict[str, str]]:
        """The probing labels of ``codes [n, n_features]`` and each label's kind.

        ``probe_per_kind`` single-feature labels of each of ``SINGLE_KINDS`` (the most
        frequent parents, their first children, the rarer feature of the first pairs, the
        rarest features) and as many any-of labels, each of ``probe_or_size`` features drawn
        in order from the rarest quarter."""
        m, n = self.probe_per_kind, self.n_features
        picks = {
            "parent": data.parents[:m].tolist(),
            "child": data.children[:m, 0].tolist(),
            "co-occurring": data.pairs[:m, 0].tolist(),
            "rare": list(range(n - m, n)),
        }
        labels, kind = {}, {}
        for name, features in picks.items():
            new = feature_labels(codes, features)
            labels |= new
            kind |= dict.fromkeys(new, name)
        start = n - n // 4
        groups = [range(start + i * self.probe_or_size, start + (i + 1) * self.probe_or_size)
                  for i in range(m)]  # fmt: skip
        new = any_of_labels(codes, groups)
        return labels | new, kind | dict.fromkeys(new, "any-of")


PROBE_CS = (0.1, 1.0, 10.0)
"""Inverse penalties the probes choose among on validation AUC (a 1-sparse probe's AUC does
not depend on it)."""


def tasks(seeds: Sequence[int]) -> list[tuple[int, str]]:
    """Every ``(seed, part)`` of the chapter, costliest part of every seed first."""
    return seed_parts(seeds, PARTS)


def related_share(n_features: int, correlated_pairs: int, n_parents: int, children: int) -> float:
    """The share of related pairs (co-occurring, or parent and child) among all pairs."""
    return (correlated_pairs + n_parents * children) / (n_features * (n_features - 1) / 2)


@torch.no_grad()
def score_run(sae: SAE, truth: Truth, data: SyntheticData, coeff: float) -> dict[str, float]:
    """Every measure of one trained SAE: ``ground_truth.score`` and, against the truth:

    Chanin et al.'s absorption (``absorption_full``, ``absorption_fraction``) with the main
    latent's miss rates (``parent_miss`` with a child, ``parent_alone_miss``, and
    ``miss_excess``, their difference: the first edition's measure); ``recovery_rare`` and
    ``recovery_common`` (mean best |cos| of the rarest quarter and the rest); counts of
    composite latents by the kind of pair they merge (``comp_<kind>``) and with a member in
    the rarest quarter (``comp_rare``); live latents standing for no single feature
    (``unmatched``) and how many of them are composites (``unmatched_composite``); true
    features no latent stands for (``missed``, ``missed_rare``).
    """
    row = score(sae, truth, coeff)
    with inference(sae):
        f = torch.cat([sae.encode(c) for c in truth.x_eval.split(8192)]).cpu()
    W = sae.W_dec.detach().cpu()
    main = fm.parent_latents(truth.dictionary, W, truth.parents)
    ab = chanin_absorption(truth.codes_eval, f, truth.dictionary, W, truth.parents,
                           truth.children, main)  # fmt: skip
    row |= {"absorption_full": ab.full_rate, "absorption_fraction": ab.fraction,
            "parent_miss": ab.parent_miss, "parent_alone_miss": ab.parent_alone_miss,
            "miss_excess": ab.parent_miss - ab.parent_alone_miss}  # fmt: skip
    best = metrics.matched_cosines(truth.dictionary, W).max_abs_cos.double()
    probs = data.probabilities
    rare = probs < torch.quantile(probs, 0.25)
    row |= {"recovery_rare": best[rare].mean().item(),
            "recovery_common": best[~rare].mean().item(), "missed": int((best < MATCH).sum()),
            "missed_rare": int((best[rare] < MATCH).sum())}  # fmt: skip
    alive = (f != 0).any(0)
    comp = fm.composites(truth.dictionary, W, alive=alive)
    pairs = comp.pair[comp.is_composite]
    kinds = fm.pair_kinds(pairs, data.pairs, data.parents, data.children)
    row |= {f"comp_{k}": sum(kind == k for kind in kinds) for k in fm.PAIR_KINDS}
    row["comp_rare"] = int(rare[pairs].any(1).sum()) if len(pairs) else 0
    unmatched = alive & (comp.single_cos < MATCH)
    row["unmatched"] = int(unmatched.sum())
    row["unmatched_composite"] = int((unmatched & comp.is_composite).sum())
    return row


def _batches(x: torch.Tensor, batch_size: int):
    return lambda run: TensorBatches(x, batch_size, seed=run.sae.seed)


def run_task(exp: CorrelatedExperiment, task: tuple[int, str]) -> dict[str, pd.DataFrame]:
    """One part of one seed: ``{"runs": table of scored runs, "probes": probe AUCs}``.

    Both tables carry ``seed`` and ``part`` columns. The widths part also holds the chance
    MMCS of each width (``variant == "chance"``) and the hedging toy (``"hedging toy"``,
    with the eigenvector's ``predicted_hedging``); it probes the true codes and x.
    """
    seed, part = task
    torch.manual_seed(seed)
    data = exp.data(seed)
    train = data.sample(exp.n_train, generator=seed + 1)
    held = data.sample(exp.n_eval, generator=seed + 2)
    truth = Truth(held.dictionary, held.x, held.codes, parents=data.parents,
                  children=data.children)  # fmt: skip
    runs = exp.runs(seed, part)

    def scored(sae: SAE, run: Run) -> dict:
        return score_run(sae, truth, data, run.train.sparsity_coeff)

    table, saes = sweep(runs, _batches(train.x, exp.batch_size), scored, progress=False)
    extra = []
    probe = data.sample(exp.probe_n, generator=seed + 3)
    labels, kind = exp.labels(data, probe.codes)
    coders, dense = {}, False
    if part == PARTS[3]:
        for w in (1.0, *exp.widths):
            extra.append({"variant": "chance", "width": w, "seed": seed,
                          "mmcs": chance_mmcs(data.dictionary, exp.d_sae(w), seed,
                                              exp.chance_draws)})  # fmt: skip
        extra += _hedging_rows(exp, seed)
        coders, dense = {"ideal": probe.codes}, True
    for run, sae in zip(runs, saes, strict=True):
        name = run.labels["variant"]
        if run.labels["width"] == 1.0 and exp.probed().get(name) == run.labels["knob"]:
            with inference(sae):
                coders[name] = sae.encode(probe.x).detach()
    probes = pd.DataFrame(columns=["label", "coder", "probe", "k", "test_auc"])
    if coders:  # single-feature labels at k = 1 only; any-of labels at every k of probe_ks
        single = {name: y for name, y in labels.items() if kind[name] != "any-of"}
        any_of = {name: y for name, y in labels.items() if kind[name] == "any-of"}
        probes = pd.concat([
            probe_coders(probe.x, coders, single, ks=(1,), Cs=PROBE_CS, seed=seed, dense=dense),
            probe_coders(probe.x, coders, any_of, ks=exp.probe_ks, Cs=PROBE_CS, seed=seed,
                         dense=dense),
        ], ignore_index=True)  # fmt: skip
    probes = probes.assign(kind=probes["label"].map(kind), seed=seed, part=part)
    table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    return {"runs": table.assign(seed=seed, part=part), "probes": probes}


def _hedging_rows(exp: CorrelatedExperiment, seed: int) -> list[dict]:
    """The one-latent SAE on the hedging toy: its hedging and the eigenvector's prediction."""
    toy = hedging_toy(exp.n_train + exp.n_eval, d=exp.hedging_d,
                      child_prob_given_parent=exp.hedging_child_prob,
                      generator=seed + 1)  # fmt: skip
    n = exp.n_train
    toy_truth = Truth(toy.dictionary, toy.x[n:], toy.codes[n:], parents=torch.tensor([0]),
                      children=torch.tensor([[1]]))  # fmt: skip
    run = Run(SAEConfig(d_in=exp.hedging_d, d_sae=1, seed=seed), exp.train_config(exp.hedging_l1))
    table, _ = train_and_score([run], _batches(toy.x[:n], exp.batch_size), toy_truth)
    return [{"variant": "hedging toy", "seed": seed, "hedging": float(table["hedging"].iloc[0]),
             "fvu": float(table["fvu"].iloc[0]),
             "predicted_hedging": eigenvector_hedging(toy.codes[n:])}]  # fmt: skip


def collect(results: Sequence[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``(runs, probes)`` tables of every seed and part from :func:`run_task`'s results."""
    runs = pd.concat([r["runs"] for r in results], ignore_index=True)
    probes = pd.concat([r["probes"] for r in results if len(r["probes"])], ignore_index=True)
    return runs, probes


def reference_at(reference: pd.DataFrame, l0: float, y: str) -> float:
    """``reference``'s ``y`` interpolated linearly in log L0 at ``l0`` (its frontier over the
    knob); NaN outside its L0 range (no extrapolation)."""
    ref = reference.sort_values("l0")
    lx = np.log(ref["l0"].to_numpy(dtype=float))
    if not lx[0] <= math.log(l0) <= lx[-1]:
        return math.nan
    return float(np.interp(math.log(l0), lx, ref[y].to_numpy(dtype=float)))


def _matched(runs: pd.DataFrame, row: pd.Series, y: str) -> float:
    """``row``'s ``y`` minus plain ReLU's (width 1) at its L0."""
    relu = runs[(runs["variant"] == "ReLU") & (runs["width"] == 1.0)]
    return float(row[y]) - reference_at(relu, float(row["l0"]), y)


def orthogonality_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The penalised runs with their differences to plain ReLU at the same L0 (same seed):
    ``d_composite_fraction``, ``d_mmcs``, ``d_fvu`` (penalised minus plain; NaN outside plain
    ReLU's L0 range) and a ``penalty`` name per power (``p=1``, ``p=3``)."""
    rows = []
    for _, row in runs[runs["variant"] == "ReLU orth."].iterrows():
        same = runs[runs["seed"] == row["seed"]]
        rows.append(row.to_dict() | {f"d_{y}": _matched(same, row, y)
                                     for y in ("composite_fraction", "mmcs", "fvu")})  # fmt: skip
    table = pd.DataFrame(rows)
    return table.assign(penalty=[f"p={p:g}" for p in table["power"]])


def ortho_gains(runs: pd.DataFrame) -> pd.DataFrame:
    """MMCS gain over plain ReLU at the same L0 of every penalised run: one row per seed,
    one column per (power, coefficient); NaN outside plain ReLU's L0 range."""
    table = orthogonality_table(runs)
    return table.pivot(index="seed", columns=["power", "coeff"], values="d_mmcs")


def _probe_mean(probes: pd.DataFrame, coder: str, kinds: Sequence[str], k: int | None) -> float:
    rows = probes[(probes["coder"] == coder) & probes["kind"].isin(kinds)]
    rows = rows[rows["k"].isna()] if k is None else rows[rows["k"] == k]
    return float(rows["test_auc"].mean()) if len(rows) else math.nan


def _above_chance(runs: pd.DataFrame, variant: str, knob: float, width: float) -> float:
    """MMCS of ``variant`` at ``knob`` and ``width`` minus the chance MMCS of that width."""
    run = one_row(runs, variant=variant, knob=knob, width=width)
    return float(run["mmcs"] - one_row(runs, variant="chance", width=width)["mmcs"])


def effects(
    exp: CorrelatedExperiment, runs: pd.DataFrame, probes: pd.DataFrame
) -> dict[str, list[float]]:
    """One effect per seed for each claim of chapter 04, oriented as the claim's metric says."""
    collected = Effects()
    add = collected.add

    base = related_share(exp.n_features, exp.correlated_pairs, exp.n_parents,
                         exp.children_per_parent)  # fmt: skip
    lin, sup = min(exp.ortho_powers), max(exp.ortho_powers)
    wide, narrow = max(exp.widths), min(exp.widths)
    seeds = sorted(runs["seed"].unique())
    # the best of the sweep, each seed's choice made on the other seeds
    for value in chosen_on_other_seeds(ortho_gains(runs).loc[seeds]):
        add("ortho_best_mmcs", value)
    for seed in seeds:
        r = runs[runs["seed"] == seed]
        arch = r[r["variant"].isin(ARCHITECTURES) & (r["width"] == 1.0)]
        n_comp = arch[[f"comp_{k}" for k in fm.PAIR_KINDS]].to_numpy().sum()
        related = arch[["comp_co-occurring", "comp_parent-child"]].to_numpy().sum()
        add("cooccurrence_composites", related / n_comp - base if n_comp else math.nan)
        add("rare_recovered_worse", (arch["recovery_common"] - arch["recovery_rare"]).mean())
        unmatched = arch["unmatched"].sum()
        add("unmatched_are_composites",
            arch["unmatched_composite"].sum() / unmatched if unmatched else math.nan)  # fmt: skip
        orth = r[r["variant"] == "ReLU orth."]
        for power, suffix in ((lin, ""), (sup, "_sup")):
            row = one_row(orth, power=power, coeff=exp.ortho_claim_coeff)
            add(f"ortho{suffix}_fewer_composites", -_matched(r, row, "composite_fraction"))
            add(f"ortho{suffix}_better_mmcs", _matched(r, row, "mmcs"))
            add(f"ortho{suffix}_fvu_cost", -_matched(r, row, "fvu"))
        for name, a, b, y in (  # a's y lies below b's at matched L0 by this much
            ("tied_less_absorption", "ReLU tied", "ReLU", "absorption_full"),
            ("tied_less_miss_excess", "ReLU tied", "ReLU", "miss_excess"),
            ("topk_better_mmcs", "ReLU", "TopK", "mmcs"),
            ("topk_more_composites", "ReLU", "TopK", "composite_fraction"),
            ("topk_more_absorption", "ReLU", "TopK", "absorption_full"),
        ):
            add(name, frontier_gap(arch, a, b, y=y, by="variant"))
        nested = r[r["variant"].isin(NESTING) & (r["width"] == 1.0)]
        for name, y in (("matryoshka_less_absorption", "absorption_full"),
                        ("matryoshka_fewer_composites", "composite_fraction")):  # fmt: skip
            add(name, frontier_gap(nested, "Matryoshka", "BatchTopK", y=y, by="variant"))

        for variant, knob, name in (("TopK", exp.topk_k, "topk_wider_recovers"),
                                    ("ReLU", exp.l1, "relu_wider_recovers")):  # fmt: skip
            add(name, _above_chance(r, variant, knob, wide) - _above_chance(r, variant, knob, 1.0))
        hedge = [one_row(r, variant=v, knob=k, width=narrow)["hedging_abs"]
                 - one_row(r, variant=v, knob=k, width=1.0)["hedging_abs"]
                 for v, k in (("TopK", exp.topk_k), ("ReLU", exp.l1))]  # fmt: skip
        add("narrow_hedges_more", np.mean(hedge))
        toy = one_row(r, variant="hedging toy")
        add("toy_hedges", toy["hedging"])
        add("toy_hedging_as_mse_predicts", abs(toy["hedging"] - toy["predicted_hedging"]))
        p = probes[probes["seed"] == seed]
        ideal = _probe_mean(p, "ideal", SINGLE_KINDS, 1)
        add("ideal_beats_dense", ideal - _probe_mean(p, "dense", SINGLE_KINDS, None))
        add(
            "ideal_short_on_any_of",
            _probe_mean(p, "dense", ["any-of"], None) - _probe_mean(p, "ideal", ["any-of"], 1),
        )
        add("relu_probe_short_of_ideal", ideal - _probe_mean(p, "ReLU", SINGLE_KINDS, 1))
        add("topk_probe_short_of_ideal", ideal - _probe_mean(p, "TopK", SINGLE_KINDS, 1))
    return collected.to_dict()
