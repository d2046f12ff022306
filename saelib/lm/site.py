"""Where an SAE was trained on a language model, kept with the SAE's own files.

    site = Site(model="smollm2-135m", hook="blocks.6.hook_resid_post", scale=s, max_norm=m)
    save_trained(sae, site, "runs/sae-6")            # config.json, weights, site.json
    sae, site = load_trained("runs/sae-6")
    codes = sae.encode(site.prepare(x_raw))           # the SAE's input unit
    site = Site.measure("smollm2-135m", hook, x_train, skip_first=1, outlier_ratio=20.0)

An SAE trained on cached activations only means something together with the facts of its
site: the hook it reads, the constant ``scale`` its inputs were multiplied by
(``E ||scale x||^2 = d_in``), the norm limit above which tokens were left out of training
(``max_norm``, raw unit; ``None``: none), and the positions skipped at the start of every
sequence (``skip_first``). This record travels with the SAE, so scoring, splicing and
probing never take those facts as separate arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from saelib.files import write_text_atomic
from saelib.io import load_sae, save_sae
from saelib.lm.model import hook_layer
from saelib.saes import SAE
from saelib.validation import check_int, check_real, require

SITE_FILE = "site.json"


def activation_scale(x: Tensor) -> float:
    """``s`` with ``mean_n ||s x_n||^2 = d_in`` for ``x [n, d_in]``.

    The "expected average" normalisation of Anthropic's April 2024 update and SAELens: one
    constant for the whole site, so FVU is unchanged and sparsity coefficients are in its
    unit.
    """
    mean_sq = x.double().pow(2).sum(-1).mean().item()
    if mean_sq == 0:
        raise ValueError("x is all zeros: no activation scale")
    return (x.shape[-1] / mean_sq) ** 0.5


def norm_limit(x: Tensor, ratio: float) -> float:
    """``ratio`` times the median token norm of ``x [n, d_in]``.

    Deep in Llama-family models a few tokens per text (attention sinks besides position 0)
    have norms ~100x the median: 0.1-0.5% of SmolLM2's tokens from block 13 on carry ~65%
    of the variance. An SAE trained on them spends itself on those directions and scales
    every other token down; tokens above this limit are left out of training and scoring.
    """
    check_real("ratio", ratio, low=0, open_low=True)
    return ratio * x.double().norm(dim=-1).median().item()


@dataclass(frozen=True)
class Site:
    """An SAE's place in a language model and the preparation of its inputs.

    Attributes:
        model: the language model's name (``saelib.lm.load_model``).
        hook: TransformerLens hook name, e.g. ``blocks.6.hook_resid_post``.
        scale: raw activations are multiplied by this before the SAE sees them, > 0.
        max_norm: tokens whose raw activation norm exceeds this were left out of training;
            None: no limit.
        skip_first: positions skipped at the start of every sequence (e.g. an attention
            sink), >= 0.
    """

    model: str
    hook: str
    scale: float
    max_norm: float | None = None
    skip_first: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.model, str) and self.model, "Site.model", self.model, "a name")
        hook_layer(self.hook)  # a hook name with a layer, or a clear error
        check_real("Site.scale", self.scale, low=0, open_low=True)
        if self.max_norm is not None:
            check_real("Site.max_norm", self.max_norm, low=0, open_low=True)
        check_int("Site.skip_first", self.skip_first, low=0)

    @property
    def layer(self) -> int:
        """The block index of ``hook``."""
        return hook_layer(self.hook)

    def keeps(self, x: Tensor) -> Tensor:
        """Mask ``[n]`` of the raw rows ``x [n, d_in]`` within ``max_norm`` (all when None)."""
        if self.max_norm is None:
            return x.new_ones(x.shape[0], dtype=bool)
        return x.norm(dim=-1) <= self.max_norm

    def prepare(self, x: Tensor) -> Tensor:
        """Raw activations ``x [..., d_in]`` in the SAE's input unit (``x * scale``)."""
        return x * self.scale

    def inliers(self, x: Tensor) -> Tensor:
        """The rows of raw ``x [n, d_in]`` within ``max_norm`` (``x`` itself when None)."""
        return x if self.max_norm is None else x[self.keeps(x)]

    def restore(self, x_hat: Tensor) -> Tensor:
        """A reconstruction in the SAE's unit back in the raw unit (``x_hat / scale``)."""
        return x_hat / self.scale

    def raw_reconstruction(self, code: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """Raw ``x [n, d_in] -> x_hat`` through ``code``, which works in the SAE's unit.

        ``x`` is prepared, ``code`` reconstructs it, the result is restored; rows above
        ``max_norm`` (left out of training) pass through unchanged. This is what a splice
        at ``hook`` puts in place of the activation.
        """

        def reconstruct(x: Tensor) -> Tensor:
            x_hat = self.restore(code(self.prepare(x)))
            if self.max_norm is None:
                return x_hat
            return torch.where(self.keeps(x)[:, None], x_hat, x)

        return reconstruct

    @classmethod
    def measure(
        cls,
        model: str,
        hook: str,
        x: Tensor,
        *,
        skip_first: int = 0,
        outlier_ratio: float | None = None,
    ) -> Site:
        """The site of ``hook`` measured on raw training activations ``x [n, d_in]``.

        With ``outlier_ratio``, ``max_norm`` is :func:`norm_limit` of ``x`` and the scale
        is :func:`activation_scale` of the rows within it; without, there is no limit.
        """
        max_norm = None if outlier_ratio is None else norm_limit(x, outlier_ratio)
        site = cls(model, hook, 1.0, max_norm, skip_first)
        return cls(model, hook, activation_scale(site.inliers(x)), max_norm, skip_first)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Site:
        return cls(**d)


def save_trained(sae: SAE, site: Site, directory: str | Path) -> Path:
    """Write ``sae`` (``saelib.io.save_sae``) and its ``site.json`` into ``directory``."""
    directory = save_sae(sae, directory)
    write_text_atomic(directory / SITE_FILE, json.dumps(site.to_dict(), indent=1) + "\n")
    return directory


def load_trained(directory: str | Path, device: str = "cpu") -> tuple[SAE, Site]:
    """Load an SAE and its site written by :func:`save_trained`; the SAE in eval mode."""
    path = Path(directory) / SITE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no site record; save the SAE with saelib.lm.site.save_trained, "
            "or load it alone with saelib.io.load_sae"
        )
    try:
        site = Site.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: not a site record ({err})") from None
    return load_sae(directory, device).eval(), site
