"""The "true features" solution of an SAE objective, to ask: objective or optimisation?

If an SAE whose decoder *is* the true dictionary (with the best encoder for it) reaches a
lower training loss than the SAE the optimiser found, the objective prefers the true
features and the optimiser missed them. If its loss is higher, the objective itself prefers
what was found (Till's question on Anders et al. 2024, "Sparse autoencoders find composed
features in small toy models").

    ref = true_feature_sae(SAEConfig(d_in=2, d_sae=4), D, TrainConfig(...), batches)
    objective(ref, x, lam)["total"]  vs  objective(found, x, lam)["total"]
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from saelib.coding.amortisation import encoder_training, set_dictionary_
from saelib.saes import SAE, SAEConfig, make_sae, module_mode
from saelib.training import TrainConfig, Trainer


@torch.no_grad()
def objective(sae: SAE, x: Tensor, sparsity_coeff: float, batch_size: int = 8192) -> dict:
    """The training objective of ``sae`` on all of ``x [n, d_in]``, in training mode.

    Returns floats ``mse``, ``sparsity`` (before the coefficient) and ``total`` =
    ``mse + sparsity_coeff * sparsity`` plus any architecture term (Gated's auxiliary loss),
    each the mean over the rows of ``x`` (chunked, weighted by chunk size). Training mode, so
    BatchTopK is scored as trained (per-batch top-k), not with its inference threshold.
    """
    device = next(sae.parameters()).device
    sums: dict[str, float] = {}
    with module_mode(sae, True):
        for chunk in x.split(batch_size):
            total, terms, _ = sae.loss(chunk.to(device), sparsity_coeff)
            for name, value in {"total": total, **terms}.items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(chunk)
    return {name: value / len(x) for name, value in sums.items()}


def sae_with_dictionary(cfg: SAEConfig, dictionary: Tensor) -> SAE:
    """An SAE built from ``cfg`` whose decoder rows are ``dictionary [d_sae, d_in]`` (unit rows),
    encoder the decoder's transpose (linear encoders), biases zero."""
    sae = make_sae(cfg)
    set_dictionary_(sae, dictionary / dictionary.norm(dim=1, keepdim=True).clamp_min(1e-12))
    sae.init_encoder_from_decoder_()  # a no-op where the encoder is not the decoder's shape
    return sae


def true_feature_sae(
    cfg: SAEConfig, dictionary: Tensor, train: TrainConfig, batches: Iterable[Tensor]
) -> SAE:
    """The best SAE of architecture ``cfg`` whose decoder is fixed to ``dictionary``.

    The decoder weights are frozen at the true atoms; everything else (encoder, biases,
    thresholds) is trained on ``batches`` with ``train``'s objective by the Trainer, starting
    from the encoder = decoder transpose, under ``saelib.coding.amortisation.encoder_training``
    (the decoder bias trains too). ``cfg.tied`` is not allowed: a tied encoder would be frozen
    too. Returns the trained SAE (decoder still equal to ``dictionary``).
    """
    sae = sae_with_dictionary(cfg, dictionary)
    with encoder_training(sae, train_b_dec=True):
        Trainer(sae, train).fit(batches)
    return sae
