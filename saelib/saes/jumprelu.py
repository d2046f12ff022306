"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead").

    z = (x - b_dec) @ W_enc + b_enc
    f = z * H(z - theta)                          # per-latent learned threshold theta > 0
    loss = ||x - x_hat||^2 + lambda * ||f||_0

H has zero gradient almost everywhere, so theta learns through straight-through
estimators with a rectangle kernel of width ``bandwidth`` (eqs. 11-12; see
``saelib.losses.jumprelu`` and ``saelib.losses.step``). theta is stored as its log so it
stays positive.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from saelib import losses
from saelib.saes.base import LinearEncoderSAE, SAEOutput
from saelib.saes.config import SAEConfig


class JumpReLUSAE(LinearEncoderSAE):
    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), math.log(cfg.init_threshold)))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()  # [d_sae]

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.linear_pre_acts(x)
        return losses.jumprelu(pre, self.threshold, self.cfg.bandwidth), pre

    def sparsity(self, out: SAEOutput) -> Tensor:
        return losses.l0_ste(out.pre_acts, self.threshold, self.cfg.bandwidth)
