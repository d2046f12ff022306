"""Gated SAE (Rajamanoharan et al. 2024, "Improving dictionary learning with gated SAEs").

Two paths share directions: the gate decides which latents fire, the magnitude path
how strongly, so the L1 penalty on the gate no longer shrinks the magnitudes.

    x_c      = x - b_dec
    pi_gate  = x_c @ W_gate + b_gate
    pi_mag   = x_c @ (W_gate * exp(r_mag)) + b_mag
    f        = H(pi_gate) * ReLU(pi_mag)
    loss = ||x - x_hat||^2 + lambda * ||ReLU(pi_gate)||_1
         + ||x - ReLU(pi_gate) @ sg(W_dec) - sg(b_dec)||^2      # sg: stop-gradient

The auxiliary term teaches the gate to reconstruct through a frozen copy of the
decoder. The L1 term is plain (not decoder-norm weighted), as in the paper, so train
Gated SAEs with a unit-norm decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from saelib import losses
from saelib.saes.base import LinearEncoderSAE, LossOutput, SAEOutput
from saelib.saes.config import SAEConfig


class GatedSAE(LinearEncoderSAE):
    @property
    def needs_unit_decoder(self) -> bool:
        return True  # the gate's L1 is plain L1

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)  # W_enc is W_gate, b_enc is b_gate
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_c = self.encoder_input(x)
        pi_gate = x_c @ self.W_enc + self.b_enc  # [batch, d_sae]
        pi_mag = x_c @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        f = (pi_gate > 0).to(pi_mag.dtype) * pi_mag.relu()
        return f, pi_gate

    def sparsity(self, out: SAEOutput) -> Tensor:
        return losses.l1(out.pre_acts.relu())

    def loss(self, x: Tensor, sparsity_coeff: float = 0.0) -> LossOutput:
        total, terms, out = super().loss(x, sparsity_coeff)
        gate = out.pre_acts.relu()
        x_hat_frozen = gate @ self.W_dec.detach() + self.b_dec.detach()
        terms["aux"] = losses.mse(x, x_hat_frozen)
        return LossOutput(total + terms["aux"], terms, out)
