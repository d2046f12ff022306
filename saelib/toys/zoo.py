"""Chapter 01's experiment: eight SAE architectures on ground truth, one seed at a time.

For one seed, :func:`run_task` (in three parts) draws the data, trains every architecture
along its own sparsity knob at ``d_sae = n_features`` (TopK and ReLU also at half and
twice that width; Matryoshka BatchTopK and MP-SAE along ``ks`` like TopK), and TopK four
ways on data with a large constant offset (neither, either or both of aux-k and the
initialisation tricks). :func:`effects` turns the seeds' tables
into one effect per seed for each claim the chapter declares
(``saelib/schemas/01_sae_zoo.yaml``). Seeds run in worker processes through
:func:`saelib.parallel.map_seeds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import pandas as pd
import torch

from saelib.claims import Effects
from saelib.data import TensorBatches
from saelib.evaluation import Run, final_drop, frontier_gap, run_sweep
from saelib.parallel import seed_parts
from saelib.saes import SAEConfig
from saelib.saes.matryoshka import prefix_widths
from saelib.toys import dictionaries
from saelib.toys.synthetic import SyntheticConfig, SyntheticData
from saelib.training import TrainConfig

WIDTHS = (0.5, 1.0, 2.0)
"""``d_sae`` as a multiple of ``expansion * n_features``: TopK and ReLU run at each."""
DEAD_VARIANTS = {"neither": (False, None), "init tricks": (True, None), "aux-k": (False, True),
                 "both": (True, True)}  # fmt: skip
"""Dead-latent variants: (initialisation tricks, aux-k)."""

__all__ = [
    "DEAD_VARIANTS",
    "PARTS",
    "WIDTHS",
    "ZooExperiment",
    "chance_mmcs",
    "collect",
    "effects",
    "final_drop",
    "run_task",
    "tasks",
]


@dataclass(frozen=True)
class ZooExperiment:
    """The chapter's settings (its parameters of the same names)."""

    n_features: int
    d: int
    mean_active: float
    zipf_exponent: float
    n_train: int
    n_eval: int
    expansion: float
    n_steps: int
    batch_size: int
    lr: float
    ks: Sequence[int]
    relu_l1: Sequence[float]
    gated_l1: Sequence[float]
    mlp_l1: Sequence[float]
    mlp_hidden: Sequence[int]
    jumprelu_l0: Sequence[float]
    jumprelu_bandwidth: float
    dead_k: int
    dead_offset_norm: float
    aux_k: int
    device: str = "cpu"

    @classmethod
    def from_params(cls, params: dict) -> ZooExperiment:
        """The experiment from a chapter's checked parameters (other names are ignored)."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})

    def d_sae(self, width: float = 1.0) -> int:
        return int(width * self.expansion * self.n_features)

    def data(self, seed: int, offset_norm: float = 0.0) -> SyntheticData:
        return SyntheticData(SyntheticConfig(
            n_features=self.n_features, d=self.d, mean_active=self.mean_active, frequency="zipf",
            zipf_exponent=self.zipf_exponent, magnitude="halfnormal", offset_norm=offset_norm,
            seed=seed))  # fmt: skip

    def train_config(self, coeff: float = 0.0, **kw) -> TrainConfig:
        return TrainConfig(
            n_steps=self.n_steps,
            lr=self.lr,
            lr_decay_steps=self.n_steps // 5,
            sparsity_coeff=coeff,
            sparsity_warmup_steps=self.n_steps // 10,
            device=self.device,
            **kw,
        )

    def runs(self, seed: int) -> list[Run]:
        """The sweep: every architecture at width 1; TopK and ReLU at the other widths."""

        def run(arch, width, knob, coeff=0.0, **kw):
            cfg = SAEConfig(d_in=self.d, d_sae=self.d_sae(width), architecture=arch, seed=seed,
                            **kw)  # fmt: skip
            return Run(cfg, self.train_config(coeff), {"width": width, "knob": knob})

        jump = {"bandwidth": self.jumprelu_bandwidth, "init_threshold": self.jumprelu_bandwidth}
        runs = []
        for width in WIDTHS:
            runs += [run("topk", width, k, k=k) for k in self.ks]
            runs += [run("relu", width, c, c) for c in self.relu_l1]
            if width != 1.0:
                continue
            runs += [run("batchtopk", width, k, k=k) for k in self.ks]
            runs += [run("gated", width, c, c) for c in self.gated_l1]
            runs += [run("mlp", width, c, c, mlp_hidden=tuple(self.mlp_hidden))
                     for c in self.mlp_l1]  # fmt: skip
            runs += [run("jumprelu", width, c, c, **jump) for c in self.jumprelu_l0]
            nested = prefix_widths(self.d_sae(width))
            runs += [run("matryoshka", width, k, k=k, matryoshka_widths=nested) for k in self.ks]
            runs += [run("mp", width, k, mp_steps=k) for k in self.ks]  # k pursuit steps
        return runs

    def dead_runs(self, seed: int) -> list[Run]:
        """TopK at ``dead_k`` four ways: with or without aux-k and the initialisation tricks."""
        cfg = SAEConfig(d_in=self.d, d_sae=self.d_sae(), architecture="topk", k=self.dead_k,
                        seed=seed)  # fmt: skip
        return [
            Run(
                cfg,
                self.train_config(
                    init_encoder_from_decoder=init,
                    init_b_dec="geometric_median" if init else "zeros",
                    aux_k=self.aux_k if aux else None,
                    dead_after_tokens=50 * self.batch_size,
                ),
                {"variant": name},
            )  # fmt: skip
            for name, (init, aux) in DEAD_VARIANTS.items()
        ]


PARTS = ("sweep at width 1", "sweep at other widths", "dead latents")
"""A seed's work in three parts of similar cost, so that worker processes stay busy."""


def tasks(seeds: Sequence[int]) -> list[tuple[int, str]]:
    """Every ``(seed, part)`` of the chapter, for :func:`run_task` in worker processes: the
    costliest part of every seed first, so that the workers finish together."""
    return seed_parts(seeds, PARTS)


def run_task(exp: ZooExperiment, task: tuple[int, str]) -> pd.DataFrame:
    """One part of one seed: its table of runs, with ``seed`` and ``part`` columns.

    The sweep parts score every run on ``n_eval`` held-out samples and keep the training
    logs (``history``); the dead-latent part trains TopK on the offset data four ways.
    """
    seed, part = task
    torch.manual_seed(seed)
    if part == "dead latents":
        data = exp.data(seed, offset_norm=exp.dead_offset_norm)
        runs = exp.dead_runs(seed)
    else:
        data = exp.data(seed)
        runs = [r for r in exp.runs(seed) if (r.labels["width"] == 1.0) == (part == PARTS[0])]
    train = data.sample(exp.n_train, generator=seed + 1)
    table = run_sweep(
        runs, lambda run: TensorBatches(train.x, exp.batch_size, seed=seed),
        data.sample(exp.n_eval, generator=seed + 2).x, true_dictionary=data.dictionary,
        progress=False, keep_history=part != "dead latents",
    )  # fmt: skip
    return table.assign(seed=seed, part=part)


def collect(tables: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``(sweep, dead)`` tables of every seed from :func:`run_task`'s results."""
    table = pd.concat(tables, ignore_index=True)
    dead = table["part"] == "dead latents"
    return table[~dead].reset_index(drop=True), table[dead].dropna(axis=1, how="all").reset_index(
        drop=True
    )


def chance_mmcs(exp: ZooExperiment, width: float, seed: int, draws: int = 5) -> float:
    """``toys.dictionaries.chance_mmcs`` for this experiment's seed and SAE width."""
    return dictionaries.chance_mmcs(exp.data(seed).dictionary, exp.d_sae(width), seed, draws)


def _gamma(table: pd.DataFrame, arch: str) -> float:
    return float(table[table["architecture"] == arch]["shrinkage"].mean())


def effects(exp: ZooExperiment, sweep: pd.DataFrame, dead: pd.DataFrame) -> dict[str, list]:
    """One effect per seed for each claim of chapter 01, oriented as the claim's metric says."""
    collected = Effects()
    add = collected.add

    nearest = min(exp.ks, key=lambda k: (abs(k - exp.mean_active), k))
    for seed in sorted(sweep["seed"].unique()):
        runs = sweep[sweep["seed"] == seed]
        dead_at = dead[dead["seed"] == seed].set_index("variant")["dead_fraction"]
        at = {w: runs[runs["width"] == w] for w in WIDTHS}
        for width, name in ((1.0, "topk_beats_relu"), (0.5, "topk_beats_relu_half"),
                            (2.0, "topk_beats_relu_double")):  # fmt: skip
            add(name, frontier_gap(at[width], "topk", "relu"))
        add("jumprelu_vs_topk", frontier_gap(at[1.0], "jumprelu", "topk"))
        add("relu_shrinks", 1 - _gamma(at[1.0], "relu"))
        add("gated_shrinks_less", _gamma(at[1.0], "gated") - _gamma(at[1.0], "relu"))
        add("auxk_fewer_dead", dead_at["neither"] - dead_at["aux-k"])
        add("init_fewer_dead", dead_at["neither"] - dead_at["init tricks"])
        topk = at[1.0][at[1.0]["architecture"] == "topk"].set_index("knob")["mmcs"]
        add("denser_recovers_worse", topk[nearest] - topk[max(exp.ks)])
        # frontier_gap(t, a, b, y): b's y minus a's at matched L0
        add(
            "matryoshka_recovers_better", frontier_gap(at[1.0], "batchtopk", "matryoshka", y="mmcs")
        )
        add("matryoshka_costs_fidelity", frontier_gap(at[1.0], "batchtopk", "matryoshka"))
        add("mp_more_faithful", frontier_gap(at[1.0], "mp", "topk"))
        add("mp_recovers_worse", frontier_gap(at[1.0], "mp", "topk", y="mmcs"))
    return collected.to_dict()
