"""ReLU SAE with an L1-family penalty (Bricken et al. 2023; Anthropic 2024 updates).

f = ReLU((x - b_dec) @ W_enc + b_enc)
loss = ||x - x_hat||^2 + lambda * penalty(f)     # penalty: l1, l1_dec_norm or tanh
"""

from __future__ import annotations

from torch import Tensor

from saelib.saes.base import LinearEncoderSAE, SAEOutput, penalty


class ReLUSAE(LinearEncoderSAE):
    @property
    def needs_unit_decoder(self) -> bool:
        return self.cfg.sparsity_penalty == "l1"

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.linear_pre_acts(x)
        return pre.relu(), pre

    def sparsity(self, out: SAEOutput) -> Tensor:
        return penalty(
            self.cfg.sparsity_penalty, out.f, self.W_dec, self.cfg.tanh_scale, nonnegative=True
        )
