"""Sparse codes without a trained encoder, and encoders fitted to a known answer.

``ito``: inference-time optimisation on a fixed dictionary (ISTA, FISTA, OMP, gradient and
matching pursuit; ``sae_ito`` on a trained SAE's decoder). ``sparse_coding``: dictionary
learning by alternating ITO and a decoder step. ``amortisation``: encoders fitted against a
known dictionary or known codes, and an SAE measured along one training run.
"""

from saelib.coding.amortisation import EncoderFitConfig, fit_encoder
from saelib.coding.ito import SOLVERS, ITOResult, sae_ito
from saelib.coding.sparse_coding import SparseCodingConfig, fit_dictionary

__all__ = [
    "SOLVERS",
    "EncoderFitConfig",
    "ITOResult",
    "SparseCodingConfig",
    "fit_dictionary",
    "fit_encoder",
    "sae_ito",
]
