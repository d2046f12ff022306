"""SAE architectures over one base; ``make_sae`` builds one from its config."""

from saelib.saes.base import SAE, LossOutput, SAEOutput, inference, module_mode
from saelib.saes.config import SAEConfig
from saelib.saes.gated import GatedSAE
from saelib.saes.jumprelu import JumpReLUSAE
from saelib.saes.lista import LISTASAE
from saelib.saes.matryoshka import MatryoshkaSAE
from saelib.saes.mlp import MLPSAE
from saelib.saes.mp import MatchingPursuitSAE
from saelib.saes.relu import ReLUSAE
from saelib.saes.topk import BatchTopKSAE, TopKSAE

SAE_CLASSES: dict[str, type[SAE]] = {
    "relu": ReLUSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "matryoshka": MatryoshkaSAE,
    "jumprelu": JumpReLUSAE,
    "gated": GatedSAE,
    "mlp": MLPSAE,
    "lista": LISTASAE,
    "mp": MatchingPursuitSAE,
}


def make_sae(cfg: SAEConfig) -> SAE:
    """Build the SAE that ``cfg.architecture`` names."""
    return SAE_CLASSES[cfg.architecture](cfg)


__all__ = [
    "SAE",
    "SAEConfig",
    "SAEOutput",
    "LossOutput",
    "SAE_CLASSES",
    "make_sae",
    "inference",
    "module_mode",
    "ReLUSAE",
    "TopKSAE",
    "BatchTopKSAE",
    "MatryoshkaSAE",
    "JumpReLUSAE",
    "GatedSAE",
    "MLPSAE",
    "LISTASAE",
    "MatchingPursuitSAE",
]
