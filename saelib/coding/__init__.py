"""Sparse codes without a trained encoder, and encoders fitted to a known answer.

``problem``: what every ITO solver shares (``ITOResult``, checks, chunks). ``lasso``: ISTA and
FISTA. ``pursuit``: OMP, gradient and matching pursuit. ``ito``: every solver by name
(``SOLVERS``) and ``sae_ito`` on a trained SAE's decoder. ``sparse_coding``: dictionary
learning by alternating ITO and a decoder step. ``amortisation``: encoders fitted against a
known dictionary or known codes, and an SAE measured along one training run. ``cost``: the
FLOPs of all of these. ``gap``, ``gap_views``, ``gap_run``: chapter 02's amortisation-gap
experiment (``gap_run``: one seed of it, and the claims' effects).
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
