"""An SAE's configuration: architecture, widths, penalty and the architecture's own settings.

    cfg = SAEConfig(d_in=576, d_sae=4608, architecture="topk", k=32)
    sae = saelib.saes.make_sae(cfg)

Validated at construction; ``to_dict``/``from_dict`` round-trip through JSON.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from saelib.validation import check_choice, check_int, check_real

Architecture = Literal[
    "relu", "topk", "batchtopk", "matryoshka", "jumprelu", "gated", "mlp", "lista", "mp"
]
SparsityPenalty = Literal["l1", "l1_dec_norm", "tanh"]
MLPOutput = Literal["relu", "topk"]

AFFINE_ENCODERS = ("relu", "topk", "batchtopk", "matryoshka", "jumprelu")
"""Encoders that are one affine map of ``x - b_dec`` (``_Affine``); codes depend on it alone."""
LINEAR_ENCODERS = (*AFFINE_ENCODERS, "gated")
"""Encoders built from linear maps of ``x - b_dec`` (Gated has two); they may be tied."""


@dataclass(frozen=True)
class SAEConfig:
    """Shape and architecture of a sparse autoencoder (training settings live in TrainConfig)."""

    d_in: int
    """Width of the activations the SAE reads."""
    d_sae: int
    """Number of latents (dictionary atoms)."""
    architecture: Architecture = "relu"
    """One of relu (L1 penalty), topk, batchtopk, matryoshka (BatchTopK with nested prefix
    losses), jumprelu, gated, mlp (deep encoder), lista (unrolled ISTA encoder), mp (matching
    pursuit on the decoder's atoms)."""
    k: int | None = None
    """Active latents per sample: required for topk, batchtopk, matryoshka and mlp with
    mlp_output='topk'."""
    sparsity_penalty: SparsityPenalty = "l1_dec_norm"
    """Penalty of relu and mlp(relu) SAEs: plain l1, decoder-norm-weighted l1, or tanh."""
    tanh_scale: float = 4.0
    """Scale inside the tanh penalty, tanh(scale * |f| * ||W_dec||)."""
    bandwidth: float = 0.001
    """JumpReLU: width eps of the rectangle kernel in the straight-through estimator."""
    init_threshold: float = 0.001
    """JumpReLU: initial threshold theta of every latent."""
    threshold_momentum: float = 0.99
    """BatchTopK: momentum of the running estimate of the inference threshold."""
    matryoshka_widths: tuple[int, ...] = ()
    """Matryoshka: the nested prefix sizes, strictly increasing, the last equal to d_sae
    (e.g. (128, 512, 2048) for d_sae 2048); each prefix's reconstruction is in the loss."""
    mlp_hidden: tuple[int, ...] = (256,)
    """MLP encoder: widths of the hidden layers (depth = len + 1 linear maps)."""
    mlp_output: MLPOutput = "relu"
    """MLP encoder: output nonlinearity; relu takes sparsity_penalty, topk takes k."""
    lista_steps: int = 2
    """LISTA encoder: unrolled ISTA steps after the first affine map (0: the ReLU encoder)."""
    mp_steps: int | None = None
    """MP-SAE: most matching-pursuit steps per sample (None: d_in, as SAELens)."""
    mp_residual_threshold: float = 0.01
    """MP-SAE: a sample stops once its residual norm is below this (0: never; SAELens 0.01)."""
    mp_stop_on_repeat: bool = True
    """MP-SAE: a sample stops once its support stops changing (as SAELens)."""
    tied: bool = False
    """Encoder weight is the decoder's transpose (linear encoders only)."""
    apply_b_dec_to_input: bool = True
    """Subtract b_dec before encoding (as in SAELens and Gao et al.)."""
    seed: int = 0
    """Seed of the parameter initialisation."""
    metadata: dict = field(default_factory=dict, compare=False)
    """Free-form provenance (model, hook, dataset), saved with the weights."""

    def __post_init__(self):
        check_int("SAEConfig.d_in", self.d_in, low=1)
        check_int("SAEConfig.d_sae", self.d_sae, low=1)
        check_choice("SAEConfig.architecture", self.architecture, get_args(Architecture))
        check_choice("SAEConfig.sparsity_penalty", self.sparsity_penalty, get_args(SparsityPenalty))
        check_choice("SAEConfig.mlp_output", self.mlp_output, get_args(MLPOutput))
        if self.uses_k:
            check_int("SAEConfig.k", self.k, low=1)
            if self.k > self.d_sae:
                raise ValueError(f"SAEConfig.k must be in [1, d_sae={self.d_sae}], got {self.k}")
        elif self.k is not None:
            raise ValueError(
                f"SAEConfig.k is only used by topk, batchtopk, matryoshka and mlp with "
                f"mlp_output='topk'; got k={self.k} for architecture={self.architecture!r} "
                f"(set k=None)"
            )
        for name in ("tanh_scale", "bandwidth", "init_threshold"):
            check_real(f"SAEConfig.{name}", getattr(self, name), low=0, open_low=True)
        if not 0 <= self.threshold_momentum < 1:
            raise ValueError(
                f"SAEConfig.threshold_momentum must be in [0, 1), got {self.threshold_momentum}"
            )
        if not self.mlp_hidden or not isinstance(self.mlp_hidden, tuple):
            raise ValueError(
                f"SAEConfig.mlp_hidden must be a non-empty tuple of positive integers, "
                f"got {self.mlp_hidden!r}"
            )
        for width in self.mlp_hidden:
            check_int("SAEConfig.mlp_hidden entries", width, low=1)
        check_int("SAEConfig.lista_steps", self.lista_steps, low=0)
        self._check_matryoshka_widths()
        if self.mp_steps is not None:
            check_int("SAEConfig.mp_steps", self.mp_steps, low=1)
        check_real("SAEConfig.mp_residual_threshold", self.mp_residual_threshold, low=0)
        if not isinstance(self.mp_stop_on_repeat, bool):
            raise ValueError(
                f"SAEConfig.mp_stop_on_repeat must be True or False, got {self.mp_stop_on_repeat!r}"
            )
        if self.architecture == "mp" and not self.apply_b_dec_to_input:
            raise ValueError(
                "SAEConfig.apply_b_dec_to_input=False is not supported for architecture='mp' "
                "(the pursuit runs on x - b_dec); use apply_b_dec_to_input=True"
            )
        if self.tied and self.architecture not in LINEAR_ENCODERS:
            raise ValueError(
                f"SAEConfig.tied is only allowed for architectures {list(LINEAR_ENCODERS)}, "
                f"got architecture={self.architecture!r}"
            )

    def _check_matryoshka_widths(self) -> None:
        widths = self.matryoshka_widths
        name = "SAEConfig.matryoshka_widths"
        if self.architecture != "matryoshka":
            if widths:
                raise ValueError(
                    f"{name} is only used by architecture='matryoshka', got {widths!r} for "
                    f"architecture={self.architecture!r} (set matryoshka_widths=())"
                )
            return
        if not isinstance(widths, tuple) or not widths:
            raise ValueError(
                f"{name} must be a non-empty tuple of prefix sizes ending at d_sae={self.d_sae}, "
                f"e.g. ({self.d_sae // 4}, {self.d_sae}), got {widths!r}"
            )
        for width in widths:
            check_int(f"{name} entries", width, low=1, high=self.d_sae)
        if any(a >= b for a, b in itertools.pairwise(widths)) or widths[-1] != self.d_sae:
            raise ValueError(
                f"{name} must increase strictly and end at d_sae={self.d_sae}, got {widths!r}"
            )

    @property
    def uses_k(self) -> bool:
        return self.architecture in ("topk", "batchtopk", "matryoshka") or (
            self.architecture == "mlp" and self.mlp_output == "topk"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mlp_hidden"] = list(self.mlp_hidden)
        d["matryoshka_widths"] = list(self.matryoshka_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SAEConfig:
        d = dict(d)
        for name in ("mlp_hidden", "matryoshka_widths"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)
