"""Where an SAE was trained on a language model, kept with the SAE's own files.

    site = Site(model="smollm2-135m", hook="blocks.6.hook_resid_post", scale=s, max_norm=m)
    save_trained(sae, site, "runs/sae-6")            # config.json, weights, site.json
    sae, site = load_trained("runs/sae-6")
    codes = sae.encode(site.prepare(x_raw))           # the SAE's input unit

An SAE trained on cached activations only means something together with the facts of its
site: the hook it reads, the constant ``scale`` its inputs were multiplied by
(``E ||scale x||^2 = d_in``), the norm limit above which tokens were left out of training
(``max_norm``, raw unit; ``None``: none), and the positions skipped at the start of every
sequence (``skip_first``). This record travels with the SAE, so scoring, splicing and
probing never take those facts as separate arguments.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import Tensor

from saelib.files import write_text_atomic
from saelib.io import load_sae, save_sae
from saelib.lm.model import hook_layer
from saelib.saes import SAE
from saelib.validation import check_int, check_real, require

SITE_FILE = "site.json"


@dataclass(frozen=True)
class Site:
    """An SAE's place in a language model and the preparation of its inputs."""

    model: str
    """The language model's name (``saelib.lm.load_model``)."""
    hook: str
    """TransformerLens hook name, e.g. ``blocks.6.hook_resid_post``."""
    scale: float
    """Raw activations are multiplied by this before the SAE sees them, > 0."""
    max_norm: float | None = None
    """Tokens whose raw activation norm exceeds this were left out of training; None: none."""
    skip_first: int = 0
    """Positions skipped at the start of every sequence (e.g. an attention sink), >= 0."""

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
