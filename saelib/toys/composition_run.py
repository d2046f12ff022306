"""Chapter 03's experiment: the composed-features toy over many seeds, against exact references.

Every seed draws its own data (and, above 2 dimensions, its own random dictionary) and SAE
initialisations. The work is split into groups of SAEs of one shape (:data:`GROUPS`); a
group trains its SAEs of *every* seed at once with ``saelib.stacked.train_stacked`` (ReLU,
tied ReLU, wider ReLU, TopK), or one after another with the Trainer (the other
architectures), and the references are solved by ``saelib.toys.true_solution``. Groups are
the task keys of ``saelib.parallel.map_seeds``. :func:`effects` turns the tables into one
effect per seed for each claim of ``saelib/schemas/03_toy_composition.yaml``.

Sections (the ``section`` column):

- ``grid``: ReLU over ``l1_coeffs x lrs`` on the 2-d toy with independent magnitudes;
- ``correlated``: ReLU over ``l1_coeffs`` at ``lr`` with every other magnitude correlation;
- ``perturbed``: ReLU started at the true features plus noise, at every correlation;
- ``fixes``: at (``l1``, ``lr``), independent magnitudes: the orthogonality penalty over
  ``ortho_coeffs x ortho_powers``, tied weights, ``wide`` latents, and each architecture;
- ``dims``: ReLU at (``l1``, ``lr``) with features as random directions in ``dims`` and with
  more features (``shapes``) in the largest dimension;
- ``reference`` rows: the best SAE with its decoder fixed to the true (or composed)
  dictionary, with the sparse-coding lower bound that certifies it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import pandas as pd
import torch

from saelib.claims import Effects
from saelib.data import TensorBatches
from saelib.evaluation import Run, one_row
from saelib.saes import SAEConfig, make_sae
from saelib.stacked import train_stacked
from saelib.toys.composed import ComposedSets, composed_sets
from saelib.toys.ground_truth import Truth, score, train_and_score
from saelib.toys.true_solution import objective, reference, sae_with_dictionary, sparse_coding_bound
from saelib.training import TrainConfig

__all__ = [
    "GROUPS",
    "TRAINER_ARCHITECTURES",
    "CompositionExperiment",
    "collect",
    "effects",
    "ortho_choice",
    "run_group",
    "soft_threshold_reference",
    "tasks",
]

TRAINER_ARCHITECTURES = ("batchtopk", "jumprelu", "gated", "mlp")
"""Architectures the stacked loop does not train: the Trainer trains them one by one."""
GROUPS = ("relu2d", "references", "higher dims", "tied", "wide", "topk", *TRAINER_ARCHITECTURES)
"""Task keys, costliest first (``map_seeds`` submits them in this order)."""


@dataclass(frozen=True)
class CompositionExperiment:
    """The chapter's settings (its parameters of the same names) and its seeds."""

    seeds: tuple[int, ...]
    n_train: int
    n_val: int
    n_eval: int
    n_steps: int
    batch_size: int
    l1_coeffs: tuple[float, ...]
    lrs: tuple[float, ...]
    l1: float
    lr: float
    correlations: tuple[float, ...]
    dims: tuple[int, ...]
    shapes: tuple[str, ...]
    ortho_coeffs: tuple[float, ...]
    ortho_powers: tuple[float, ...]
    wide: tuple[int, ...]
    perturbation: float
    topk_k: int
    jumprelu_l0: float
    jumprelu_bandwidth: float
    mlp_hidden: tuple[int, ...]
    device: str = "cpu"

    @classmethod
    def from_params(cls, params: dict) -> CompositionExperiment:
        """The experiment from a chapter's checked parameters (other names are ignored)."""
        seeds = tuple(range(params["seed"], params["seed"] + params["n_seeds"]))
        values = {f.name: params[f.name] for f in fields(cls) if f.name in params}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(seeds=seeds, **values)

    # -- data ---------------------------------------------------------------------------
    def toy(self, seed: int, split: str, corr: float = 0.0, d: int = 2, shape: str = "2x2"):
        """The seed's ``split`` (train, val or test) of one toy setting.

        Each (seed, split, setting) has its own generator; the dictionary above 2-d is drawn
        from the seed, so every split of a seed shares it.
        """
        n_sets, set_size = (int(v) for v in shape.split("x"))
        n = {"train": self.n_train, "val": self.n_val, "test": self.n_eval}[split]
        stream = zlib.crc32(f"{seed}/{split}/{corr}/{d}/{shape}".encode())
        return composed_sets(n, n_sets=n_sets, set_size=set_size, d=d, correlation=corr,
                             generator=stream, dictionary_seed=seed)  # fmt: skip

    def train_config(self, coeff: float, lr: float | None = None, **kw) -> TrainConfig:
        return TrainConfig(n_steps=self.n_steps, lr=self.lr if lr is None else lr,
                           lr_decay_steps=self.n_steps // 5, sparsity_coeff=coeff,
                           device=self.device, progress=False, **kw)  # fmt: skip

    def sae_config(self, seed: int, d: int = 2, width: int = 4, arch: str = "relu", **kw):
        if arch == "jumprelu":
            kw |= {"bandwidth": self.jumprelu_bandwidth, "init_threshold": self.jumprelu_bandwidth}
        elif arch in ("topk", "batchtopk"):
            kw |= {"k": self.topk_k}
        elif arch == "mlp":
            kw |= {"mlp_hidden": self.mlp_hidden}
        return SAEConfig(d_in=d, d_sae=width, architecture=arch, seed=seed, **kw)


def tasks(exp: CompositionExperiment) -> list[str]:
    """The task keys for ``map_seeds``: every group, costliest first."""
    return list(GROUPS)


# -- one group ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Member:
    seed: int
    labels: dict
    sae: SAEConfig
    train: TrainConfig
    corr: float = 0.0
    d: int = 2
    shape: str = "2x2"
    perturbed: bool = False


def run_group(exp: CompositionExperiment, group: str) -> pd.DataFrame:
    """Train and score one group (a key of :data:`GROUPS`) for every seed; one row per SAE
    (or per reference), with ``seed``, ``section`` and the labels of its setting."""
    torch.manual_seed(0)
    if group == "references":
        return _references_2d(exp)
    members = _members(exp, group)
    if group in TRAINER_ARCHITECTURES:
        return _train_one_byone_row(exp, members)
    return _train_stacked(exp, members, with_history=group == "relu2d")


def _members(exp: CompositionExperiment, group: str) -> list[_Member]:
    if group not in GROUPS or group == "references":
        raise ValueError(f"unknown group {group!r}; expected one of {list(GROUPS)}")
    return [m for s in exp.seeds for m in _seed_members(exp, group, s)]


def _seed_members(exp: CompositionExperiment, group: str, s: int) -> list[_Member]:
    """One seed's SAEs of ``group``."""
    base, relu = exp.train_config(exp.l1), exp.sae_config(s)
    fix = {"section": "fixes", "l1": exp.l1, "lr": exp.lr}
    if group == "relu2d":
        grid = [_Member(s, {"section": "grid", "l1": c, "lr": r, "variant": "ReLU"}, relu,
                        exp.train_config(c, r))
                for c in exp.l1_coeffs for r in exp.lrs]  # fmt: skip
        correlated = [_Member(s, {"section": "correlated", "l1": c, "lr": exp.lr, "corr": corr},
                              relu, exp.train_config(c), corr=corr)
                      for corr in exp.correlations if corr != 0 for c in exp.l1_coeffs]  # fmt: skip
        perturbed = [_Member(s, {"section": "perturbed", "l1": exp.l1, "lr": exp.lr, "corr": corr},
                             relu, base, corr=corr, perturbed=True)
                     for corr in exp.correlations]  # fmt: skip
        ortho = [_Member(s, fix | {"variant": f"orthogonality p={p:g}", "coeff": c, "power": p},
                         relu, replace(base, orthogonality_coeff=c, orthogonality_power=p))
                 for p in exp.ortho_powers for c in exp.ortho_coeffs]  # fmt: skip
        return grid + correlated + perturbed + ortho
    if group == "tied":
        return [_Member(s, fix | {"variant": "tied"}, exp.sae_config(s, tied=True), base)]
    if group == "wide":
        return [_Member(s, fix | {"variant": f"{w} latents", "width": w},
                        exp.sae_config(s, width=w), base) for w in exp.wide]  # fmt: skip
    if group == "higher dims":
        big = max(exp.dims)
        settings = [(d, "2x2") for d in exp.dims if d > 2] + [(big, shape) for shape in exp.shapes]
        return [_Member(s, {"section": "dims", "l1": exp.l1, "lr": exp.lr,
                            "setting": f"d={d}, {shape}"},
                        exp.sae_config(s, d=d, width=_n_features(shape)), base, d=d, shape=shape)
                for d, shape in settings]  # fmt: skip
    coeff = {"topk": 0.0, "batchtopk": 0.0, "jumprelu": exp.jumprelu_l0}.get(group, exp.l1)
    train = exp.train_config(coeff)
    return [_Member(s, fix | {"variant": _ARCH_NAMES[group]}, exp.sae_config(s, arch=group), train)]


def _n_features(shape: str) -> int:
    n_sets, set_size = (int(v) for v in shape.split("x"))
    return n_sets * set_size


_ARCH_NAMES = {"topk": "TopK", "batchtopk": "BatchTopK", "jumprelu": "JumpReLU", "gated": "Gated",
               "mlp": "MLP encoder"}  # fmt: skip


def _truth(toy: ComposedSets) -> Truth:
    return Truth(toy.batch.dictionary, toy.batch.x, toy.batch.codes, composed=toy.composed)


def _scored(member: _Member, sae, data: dict) -> dict:
    """Test-set scores, plus the validation FVU and composite fraction (for choices)."""
    lam = member.train.sparsity_coeff
    row = {"seed": member.seed, "corr": member.corr, "d": member.d, "shape": member.shape,
           "architecture": member.sae.architecture, **member.labels}  # fmt: skip
    row |= score(sae, _truth(data["test"]), lam)
    val = score(sae, _truth(data["val"]), lam)
    row |= {"val_fvu": val["fvu"], "val_composite_fraction": val["composite_fraction"]}
    return row


def _data(exp: CompositionExperiment, member: _Member, cache: dict) -> dict:
    key = (member.seed, member.corr, member.d, member.shape)
    if key not in cache:
        cache[key] = {
            split: exp.toy(*key[:1], split, *key[1:]) for split in ("train", "val", "test")
        }
    return cache[key]


def _start(member: _Member, toy: ComposedSets, exp: CompositionExperiment):
    """A fresh SAE, or (``perturbed``) one whose decoder is the true dictionary plus noise."""
    sae = make_sae(member.sae)
    if member.perturbed:
        g = torch.Generator().manual_seed(
            zlib.crc32(f"perturb/{member.seed}/{member.corr}".encode())
        )
        noisy = toy.batch.dictionary + exp.perturbation * torch.randn(
            toy.batch.dictionary.shape, generator=g)  # fmt: skip
        sae = sae_with_dictionary(member.sae, noisy)
    return sae


def _train_stacked(
    exp: CompositionExperiment, members: list[_Member], with_history: bool
) -> pd.DataFrame:
    """Train ``members`` stacked, one stack per SAE shape; score each."""
    cache: dict = {}
    data = [_data(exp, m, cache) for m in members]
    saes = [_start(m, d["train"], exp) for m, d in zip(members, data, strict=True)]
    histories: list = [None] * len(members)
    shapes: dict = {}
    for i, m in enumerate(members):
        shapes.setdefault(replace(m.sae, seed=0), []).append(i)
    for ids in shapes.values():
        batches = [TensorBatches(data[i]["train"].batch.x, exp.batch_size, seed=members[i].seed)
                   for i in ids]  # fmt: skip
        logs = train_stacked([saes[i] for i in ids], [members[i].train for i in ids], batches)
        for i, log in zip(ids, logs, strict=True):
            histories[i] = log
    rows = []
    for member, sae, d, history in zip(members, saes, data, histories, strict=True):
        row = _scored(member, sae.eval(), d)
        if with_history and member.labels["section"] == "grid":
            row["history"] = history
        rows.append(row)
    table = pd.DataFrame(rows)
    if "setting" in table:  # references for the higher-dimensional settings
        table = pd.concat([table, _references_dims(exp, members, cache)], ignore_index=True)
    return table


def _train_one_byone_row(exp: CompositionExperiment, members: list[_Member]) -> pd.DataFrame:
    """Train ``members`` with the Trainer, one after another; score each."""
    cache: dict = {}
    rows = []
    for member in members:
        d = _data(exp, member, cache)
        x = d["train"].batch.x

        def batches(run: Run, x=x) -> TensorBatches:
            return TensorBatches(x, exp.batch_size, seed=run.sae.seed)

        _, (sae,) = train_and_score([Run(member.sae, member.train)], batches, _truth(d["test"]))
        rows.append(_scored(member, sae, d))
    return pd.DataFrame(rows)


# -- references -----------------------------------------------------------------------------
def soft_threshold_reference(cfg: SAEConfig, dictionary: torch.Tensor, sparsity_coeff: float):
    """The ReLU SAE with decoder ``dictionary`` whose codes are the exact sparse-coding
    solution when the dictionary is orthonormal vectors and their negatives (the 2-d toy's
    true and composed dictionaries): ``W_enc = D^T``, ``b_enc = -lambda / 2``, ``b_dec = 0``.
    For ``||x - f D||^2 + lambda sum f`` with ``f >= 0`` each code is ``max(<d_k, x> -
    lambda / 2, 0)``: the soft threshold, which this encoder computes."""
    sae = sae_with_dictionary(cfg, dictionary)
    with torch.no_grad():
        sae.b_enc.fill_(-sparsity_coeff / 2)
    return sae


def _reference_row(seed, labels, dictionary_name, value, bound, method, **extra) -> dict:
    return {"seed": seed, "section": "reference", "dictionary": dictionary_name, **labels,
            "objective": value, "bound": bound, "gap": (value - bound) / value,
            "method": method, **extra}  # fmt: skip


def _references_2d(exp: CompositionExperiment) -> pd.DataFrame:
    """The 2-d toy: the true and composed dictionaries at every correlation and lambda, by the
    closed-form encoder, each beside the sparse-coding bound on the test samples."""
    rows = []
    for s in exp.seeds:
        cfg = exp.sae_config(s)
        for corr in exp.correlations:
            toy = exp.toy(s, "test", corr)
            for c in exp.l1_coeffs:
                for name, D in (("true", toy.batch.dictionary), ("composed", toy.composed)):
                    sae = soft_threshold_reference(cfg, D, c)
                    value = objective(sae, toy.batch.x, c)["total"]
                    bound = sparse_coding_bound(D, toy.batch.x, c)
                    rows.append(_reference_row(s, {"corr": corr, "l1": c, "d": 2, "shape": "2x2"},
                                               name, value, bound, "closed form"))  # fmt: skip
    return pd.DataFrame(rows)


def _references_dims(
    exp: CompositionExperiment, members: list[_Member], cache: dict
) -> pd.DataFrame:
    """Each higher-dimensional setting: L-BFGS on the encoder with the decoder fixed to the
    true dictionary (and to the composed one where it has as many directions)."""
    rows = []
    for m in members:
        d = _data(exp, m, cache)
        toy = d["train"]
        width = m.sae.d_sae
        dictionaries = {"true": toy.batch.dictionary}
        if len(toy.composed) == width:
            dictionaries["composed"] = toy.composed
        for name, D in dictionaries.items():
            ref = reference(m.sae, D, toy.batch.x, d["test"].batch.x, exp.l1)
            rows.append(_reference_row(
                m.seed, {"corr": 0.0, "l1": exp.l1, "d": m.d, "shape": m.shape,
                         "setting": m.labels["setting"]},
                name, ref.objective, ref.bound, "L-BFGS", grad_norm=ref.grad_norm))  # fmt: skip
    return pd.DataFrame(rows)


# -- tables and effects -----------------------------------------------------------------------
def collect(tables: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, references)`` of every group from :func:`run_group`'s results."""
    table = pd.concat(tables, ignore_index=True)
    is_ref = table["section"] == "reference"
    refs = table[is_ref].dropna(axis=1, how="all").reset_index(drop=True)
    return table[~is_ref].reset_index(drop=True), refs


def ortho_choice(runs: pd.DataFrame, plain_val_fvu: float, margin: float = 0.01) -> pd.Series:
    """The orthogonality coefficient chosen on validation for one seed and power.

    Among ``runs`` (one per coefficient), those whose validation FVU is at most
    ``plain_val_fvu + margin`` (no more reconstruction cost than the book's FVU margin);
    of them the lowest validation composite fraction, ties to the smallest coefficient. If
    none qualifies, the smallest coefficient. Returns that run's row.
    """
    runs = runs.sort_values("coeff")
    ok = runs[runs["val_fvu"] <= plain_val_fvu + margin]
    pool = ok if len(ok) else runs.head(1)
    return pool.loc[pool["val_composite_fraction"].idxmin()]


def effects(exp: CompositionExperiment, runs: pd.DataFrame, refs: pd.DataFrame) -> dict[str, list]:
    """One effect per seed for each claim of chapter 03, oriented as the claim's metric says."""
    collected = Effects()
    add = collected.add

    hi = max(exp.correlations)
    big = f"d={max(exp.dims)}, 2x2"
    low = f"d={min(d for d in exp.dims if d > 2)}, 2x2"
    for s in exp.seeds:
        r, f = refs[refs["seed"] == s], runs[runs["seed"] == s]

        def ref(name, corr=0.0, l1=exp.l1, setting=None, r=r):
            if setting is None:
                return one_row(r[r["d"] == 2], dictionary=name, corr=corr, l1=l1)["objective"]
            return one_row(r, dictionary=name, setting=setting)["objective"]

        def advantage(corr):
            return (ref("true", corr) - ref("composed", corr)) / ref("true", corr)

        plain = one_row(f, section="grid", l1=exp.l1, lr=exp.lr)
        add("composed_cheaper_2d", advantage(0.0))
        add("correlation_strengthens", advantage(hi) - advantage(0.0))
        add("found_composed_2d", plain["mmcs_composed"] - plain["mmcs"])
        best0 = min(ref("true"), ref("composed"))
        add("optimiser_gap_2d", plain["objective"] / best0 - 1)
        corr_run = one_row(f, section="correlated", l1=exp.l1, corr=hi)
        add(
            "optimiser_gap_correlated",
            corr_run["objective"] / min(ref("true", hi), ref("composed", hi)) - 1,
        )
        lowd = one_row(f, section="dims", setting=low)
        add(
            "optimiser_gap_low_d",
            lowd["objective"] / min(ref("true", setting=low), ref("composed", setting=low)) - 1,
        )
        bigd = one_row(f, section="dims", setting=big)
        add("finds_truth_high_d", bigd["mmcs"] - 1)
        add("composed_worse_high_d", ref("composed", setting=big) / ref("true", setting=big) - 1)
        for corr, name in ((0.0, "truth_unstable_independent"), (hi, "truth_unstable_correlated")):
            add(name, one_row(f, section="perturbed", corr=corr)["composite_fraction"])
        comp = plain["composite_fraction"]
        fixes = f[f["section"] == "fixes"]
        for p, name in ((min(exp.ortho_powers), "ortho_linear_fewer_composites"),
                        (max(exp.ortho_powers), "ortho_superlinear_fewer_composites")):  # fmt: skip
            chosen = ortho_choice(
                fixes[fixes["variant"] == f"orthogonality p={p:g}"], plain["val_fvu"]
            )
            add(name, comp - chosen["composite_fraction"])
        add("tied_fewer_composites", comp - one_row(fixes, variant="tied")["composite_fraction"])
        widest = one_row(fixes, variant=f"{max(exp.wide)} latents")
        add("wider_fewer_composites", comp - widest["composite_fraction"])
        for arch in ("topk", "batchtopk", "jumprelu", "gated"):
            add(
                f"{arch}_fewer_composites",
                comp - one_row(fixes, variant=_ARCH_NAMES[arch])["composite_fraction"],
            )
        add(
            "mlp_more_composites",
            one_row(fixes, variant="MLP encoder")["composite_fraction"] - comp,
        )
    return collected.to_dict()
