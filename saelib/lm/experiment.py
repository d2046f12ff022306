"""Chapter 05's experiment: SAEs on a language model's residual stream, one seed at a time.

For one seed, :func:`run_task` (in five parts of similar cost, so that worker processes
stay busy) trains every architecture along its own sparsity knob at ``width`` latents on
the cached activations of the last of ``layers``, the TopK and ReLU SAEs again at the other
``widths``, TopK without aux-k or the initialisation tricks, and TopK at the first of
``layers``; it scores each on held-out activations (FVU, L0, dead latents) and splices
those the claims need into the model (delta loss over the held-out sequences, CE-loss
recovered against zero and mean ablation). :func:`effects` turns the seeds' tables into
one effect per seed for each claim the chapter declares
(``saelib/schemas/05_lm_scaling.yaml``). Seeds differ in the SAEs' initialisation and
batch order; the corpus, the caches and the held-out sequences are shared.

The workers rebuild what they need from the caches' directories and the model's name: the
language model is loaded once per process; the splice baselines (clean loss per sequence,
zero- and mean-ablated losses, :class:`saelib.lm.sweep.SpliceBaseline`) are measured once,
in the notebook, and passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import pandas as pd
import torch
from torch import Tensor

from saelib.claims import Effects
from saelib.evaluation import Run, frontier_gap, one_row, sweep
from saelib.lm.activations import open_cache
from saelib.lm.model import process_model, resid_hook
from saelib.lm.scaling import fit_power_law, log_curvature
from saelib.lm.sweep import LMScorer, SpliceBaseline, ito_table, train_config
from saelib.parallel import seed_parts
from saelib.saes import SAEConfig

ARCHITECTURES = ("topk", "batchtopk", "relu", "gated", "jumprelu", "mlp", "mlp_topk")
"""The sweep's variants: ``mlp`` has a ReLU output (as O'Neill et al.), ``mlp_topk`` a TopK one."""
SPLICED = ("topk", "relu")
"""Architectures whose every sweep run is spliced into the model (the downstream-loss claims)."""
DEAD_VARIANTS = {"both": (True, True), "no aux-k": (True, False), "no init tricks": (False, True),
                 "neither": (False, False)}  # fmt: skip
"""TopK at ``ks[0]``: (initialisation tricks, aux-k). ``both`` is the sweep's own run."""
SWEEP_PARTS = {
    "sweep: mlp": ("mlp", "mlp_topk"),
    "sweep: gated, jumprelu": ("gated", "jumprelu"),
    "sweep: relu, batchtopk": ("relu", "batchtopk"),
    "sweep: topk, ITO": ("topk",),
}
"""The sweep's parts: the architectures each trains."""
PARTS = ("sweep: mlp", "scaling, dead latents, layers", "sweep: gated, jumprelu",
         "sweep: relu, batchtopk", "sweep: topk, ITO")  # fmt: skip
"""A seed's work in parts of similar cost, costliest first."""

__all__ = [
    "ARCHITECTURES",
    "DEAD_VARIANTS",
    "PARTS",
    "SWEEP_PARTS",
    "LMExperiment",
    "effects",
    "run_task",
    "tasks",
    "width_curve",
]


@dataclass(frozen=True)
class LMExperiment:
    """The chapter's settings (its parameters of the same names) and the shared data."""

    model_name: str
    layers: Sequence[int]
    layer_ks: Sequence[int]
    width: int
    widths: Sequence[int]
    ks: Sequence[int]
    relu_l1: Sequence[float]
    gated_l1: Sequence[float]
    jumprelu_l0: Sequence[float]
    jumprelu_bandwidth: float
    jumprelu_threshold: float
    mlp_l1: Sequence[float]
    mlp_hidden: Sequence[int]
    scaling_l1: float
    n_steps: int
    batch_size: int
    lr: float
    aux_k: int
    dead_after_tokens: int
    ito_solver: str
    device: str
    precision: str = "float32"
    """SAE training: "float32", or "bfloat16" mixed precision (``TrainConfig.precision``)."""
    d_model: int = 0
    """Width of the residual stream (the SAEs' ``d_in``)."""
    train_cache: str = ""
    """Directory of the training activation cache (every hook of ``layers``)."""
    eval_cache: str = ""
    """Directory of the held-out activation cache."""
    ce_tokens: Tensor | None = None
    """Held-out sequences ``[n_seq, n_ctx]`` the splices are measured on."""
    baselines: Mapping[str, SpliceBaseline] | None = None
    """Per hook: the losses a splice is compared with."""

    @classmethod
    def from_params(cls, params: Mapping, **data) -> LMExperiment:
        """The experiment from a chapter's checked parameters and ``data`` (the caches'
        directories, ``ce_tokens``, ``baselines``); other names are ignored."""
        names = {f.name for f in fields(cls)} - set(data)
        return cls(**{name: params[name] for name in names if name in params}, **data)

    @property
    def hooks(self) -> list[str]:
        """The residual stream after each of ``layers``; the last is the main site."""
        return [resid_hook(layer) for layer in self.layers]

    def run(self, arch: str, knob: float, seed: int, width: int | None = None, **train) -> Run:
        """One sweep run of ``arch`` at its sparsity ``knob`` (k, or the sparsity coefficient)."""
        sae = dict(d_in=self.d_model, d_sae=width or self.width, seed=seed)
        if arch in ("topk", "batchtopk"):
            sae |= dict(architecture=arch, k=int(knob))
            train = dict(aux_k=self.aux_k) | train
        elif arch == "mlp_topk":
            sae |= dict(architecture="mlp", mlp_output="topk", k=int(knob),
                        mlp_hidden=tuple(self.mlp_hidden))  # fmt: skip
            train = dict(aux_k=self.aux_k) | train
        elif arch == "mlp":
            sae |= dict(architecture="mlp", mlp_hidden=tuple(self.mlp_hidden))
        elif arch == "jumprelu":
            sae |= dict(architecture=arch, bandwidth=self.jumprelu_bandwidth,
                        init_threshold=self.jumprelu_threshold)  # fmt: skip
        else:
            sae |= dict(architecture=arch)
        coeff = 0.0 if arch in ("topk", "batchtopk", "mlp_topk") else float(knob)
        cfg = train_config(coeff, n_steps=self.n_steps, lr=self.lr, device=self.device,
                           dead_after_tokens=self.dead_after_tokens, precision=self.precision,
                           **train)  # fmt: skip
        return Run(SAEConfig(**sae), cfg, {"variant": arch, "knob": knob})

    def knobs(self, arch: str) -> Sequence[float]:
        """The sparsity settings ``arch`` is swept over."""
        coeffs = {"relu": self.relu_l1, "gated": self.gated_l1, "jumprelu": self.jumprelu_l0,
                  "mlp": self.mlp_l1}  # fmt: skip
        return coeffs.get(arch, self.ks)


def tasks(seeds: Sequence[int]) -> list[tuple[int, str]]:
    """Every ``(seed, part)`` of the chapter, costliest parts first."""
    return seed_parts(seeds, PARTS)


def _scorer(exp: LMExperiment, hook: str) -> LMScorer:
    """The language model (loaded once per process) and a scorer at ``hook``."""
    lm = process_model(exp.model_name, exp.device)
    train = open_cache(exp.train_cache, verify=False)  # shards are verified as they stream
    x_eval = open_cache(exp.eval_cache).load(hook)
    tokens = exp.ce_tokens.to(lm.device)
    return LMScorer(lm, train.site(hook), x_eval, tokens, baseline=exp.baselines[hook])


def _sweep(exp, scorer, runs, seed, spliced) -> tuple[pd.DataFrame, list]:
    """Train ``runs`` on the scorer's site (a fresh batch stream per run, seeded by ``seed``)
    and score them, splicing those whose variant is in ``spliced``."""
    train = open_cache(exp.train_cache, verify=False)

    def batches(run):
        return scorer.scaled(train.batches(scorer.site.hook, exp.batch_size, seed=seed))

    def score(sae, run):
        return scorer.score(sae, splice=run.labels["variant"] in spliced)

    table, saes = sweep(runs, batches, score, progress=False, keep_history=True)
    return table.assign(architecture=table["variant"]), saes


def run_task(exp: LMExperiment, task: tuple[int, str]) -> pd.DataFrame:
    """One part of one seed: its table of runs, with ``seed``, ``part``, ``hook``, ``width``
    and ``group`` (sweep, scaling, dead, layer or ito) columns."""
    seed, part = task
    torch.manual_seed(seed)
    main, first = exp.hooks[-1], exp.hooks[0]
    scorer = _scorer(exp, main)
    tables = []

    def add(table, group, hook=main):
        tables.append(table.assign(group=group, hook=hook))

    if part in SWEEP_PARTS:
        archs = SWEEP_PARTS[part]
        runs = [exp.run(a, knob, seed) for a in archs for knob in exp.knobs(a)]
        table, saes = _sweep(exp, scorer, runs, seed, SPLICED)
        add(table.assign(width=exp.width), "sweep")
        if "topk" in archs:  # SAE+ITO on the TopK decoders, spliced at the layer_ks
            topk = (table["variant"] == "topk").tolist()
            kept = [sae for sae, keep in zip(saes, topk, strict=True) if keep]
            ito = ito_table(scorer, table[topk], kept, solver=exp.ito_solver, splice=exp.layer_ks)
            add(ito.assign(variant="topk+ITO", width=exp.width), "ito")
    else:
        k_dead, k_scale = exp.ks[0], exp.ks[-1]
        others = [w for w in exp.widths if w != exp.width]
        runs = [exp.run("topk", k_scale, seed, width=w) for w in others]
        runs += [exp.run("relu", exp.scaling_l1, seed, width=w) for w in others]
        table, _ = _sweep(exp, scorer, runs, seed, ())
        add(table.assign(width=[r.sae.d_sae for r in runs]), "scaling")
        runs = []
        for name, (init, aux) in DEAD_VARIANTS.items():
            if name != "both":
                extra = dict(init_encoder_from_decoder=init, init_b_dec="mean" if init else "zeros",
                             aux_k=exp.aux_k if aux else None)  # fmt: skip
                runs.append(exp.run("topk", k_dead, seed, **extra))
        table, _ = _sweep(exp, scorer, runs, seed, ())
        variants = [n for n in DEAD_VARIANTS if n != "both"]
        add(table.assign(width=exp.width, dead_variant=variants), "dead")
        shallow = _scorer(exp, first)
        runs = [exp.run("topk", k, seed) for k in exp.layer_ks]
        table, _ = _sweep(exp, shallow, runs, seed, ("topk",))
        add(table.assign(width=exp.width), "layer", hook=first)
    return pd.concat(tables, ignore_index=True).assign(seed=seed, part=part)


def effects(exp: LMExperiment, table: pd.DataFrame) -> dict[str, list[float]]:
    """One effect per seed for each claim of chapter 05, oriented as the claim's metric says."""
    collected = Effects()
    add = collected.add

    k_mid = exp.layer_ks[-1]
    for seed in sorted(table["seed"].unique()):
        runs = table[table["seed"] == seed]
        swept = runs[runs["group"] == "sweep"]
        add("topk_beats_relu", frontier_gap(swept, "topk", "relu"))
        add("topk_beats_relu_loss", frontier_gap(swept, "topk", "relu", y="delta_loss"))
        add("batchtopk_beats_topk", frontier_gap(swept, "batchtopk", "topk"))
        add("jumprelu_vs_topk", frontier_gap(swept, "jumprelu", "topk"))
        add("gated_beats_relu", frontier_gap(swept, "gated", "relu"))
        add("mlp_beats_relu", frontier_gap(swept, "mlp", "relu"))
        add("mlp_topk_beats_topk", frontier_gap(swept, "mlp_topk", "topk"))
        spliced = swept[swept["variant"].isin(SPLICED)]
        add("zero_ablation_flatters",
            (spliced["ce_loss_recovered"] - spliced["ce_recovered_mean"]).mean())  # fmt: skip
        add("splice_costs_loss", one_row(swept, variant="topk", knob=exp.ks[-1])["delta_loss"])
        for arch, name in (("topk", "topk"), ("relu", "relu")):
            curve = width_curve(runs, exp, arch)
            add(f"{name}_width_gain", fit_power_law(curve["width"], curve["fvu"]).b)
            if arch == "topk":
                add("topk_flattens", log_curvature(curve["width"], curve["fvu"]))
        dead = runs[runs["group"] == "dead"].set_index("dead_variant")["dead_fraction"]
        both = one_row(swept, variant="topk", knob=exp.ks[0])["dead_fraction"]
        add("auxk_fewer_dead", dead["no aux-k"] - both)
        add("init_fewer_dead", dead["no init tricks"] - both)
        ito = runs[runs["group"] == "ito"].set_index("knob")
        topk = swept[swept["variant"] == "topk"].set_index("knob")
        add("ito_beats_encoder", (topk["fvu"] - ito["fvu"]).mean())
        add("ito_beats_encoder_loss", topk.loc[k_mid, "delta_loss"] - ito.loc[k_mid, "delta_loss"])
        layer = runs[runs["group"] == "layer"].set_index("knob")
        deep = topk.loc[list(exp.layer_ks)]
        shallow = layer.loc[list(exp.layer_ks)]
        add("shallow_lower_fvu", (deep["fvu"] - shallow["fvu"]).min())
        add("shallow_higher_loss", (shallow["delta_loss"] - deep["delta_loss"]).min())
    return collected.to_dict()


def width_curve(runs: pd.DataFrame, exp: LMExperiment, arch: str) -> pd.DataFrame:
    """FVU against width of ``arch`` (TopK at ``ks[-1]``, ReLU at ``scaling_l1``) for one
    seed's ``runs``: the scaling runs plus the sweep's run at ``width``."""
    knob = exp.ks[-1] if arch == "topk" else exp.scaling_l1
    main = runs[(runs["group"] == "sweep") & (runs["variant"] == arch) & (runs["knob"] == knob)]
    scaled = runs[(runs["group"] == "scaling") & (runs["variant"] == arch)]
    return pd.concat([scaled, main]).sort_values("width")[["width", "fvu", "l0"]]
