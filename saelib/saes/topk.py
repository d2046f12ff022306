"""TopK and BatchTopK SAEs: sparsity by construction, no penalty.

TopK (Gao et al. 2024):       f = ReLU(TopK_k((x - b_dec) @ W_enc + b_enc)), per sample.
BatchTopK (Bussmann et al. 2024): keep the ``k * batch`` largest pre-activations of the
whole batch, so L0 varies per sample with mean k. At inference, where there is no batch,
a latent fires when its pre-activation exceeds a threshold estimated during training
(a running mean of the smallest activation kept per batch).
"""

from __future__ import annotations

import torch
from torch import Tensor

from saelib.saes.base import LinearEncoderSAE, SAEConfig, SAEOutput


def topk_activation(pre_acts: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest entries of each row (then ReLU), zero the rest.

    pre_acts: ``[batch, d_sae]``; returns codes of the same shape.
    """
    vals, idx = pre_acts.topk(k, dim=-1, sorted=False)  # [batch, k]
    return torch.zeros_like(pre_acts).scatter(-1, idx, vals.relu())


def batch_topk_activation(pre_acts: Tensor, k: int) -> Tensor:
    """Keep the ``k * batch`` largest positive entries of the whole batch."""
    flat = pre_acts.relu().flatten()
    vals, idx = flat.topk(k * pre_acts.shape[0], sorted=False)
    return torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre_acts)


class TopKSAE(LinearEncoderSAE):
    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.linear_pre_acts(x)
        return topk_activation(pre, self.cfg.k), pre

    def sparsity(self, out: SAEOutput) -> Tensor:
        return out.f.new_zeros(())  # sparsity is enforced by the activation


class BatchTopKSAE(TopKSAE):
    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        # Inference threshold; negative means "not estimated yet".
        self.register_buffer("threshold", torch.tensor(-1.0))

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.linear_pre_acts(x)
        if self.training or self.threshold < 0:
            return batch_topk_activation(pre, self.cfg.k), pre
        return pre * (pre > self.threshold), pre

    @torch.no_grad()
    def update_statistics(self, out: SAEOutput) -> None:
        """Running mean of the smallest kept activation (the batch's effective threshold)."""
        kept = out.f[out.f > 0]
        if kept.numel() == 0:
            return
        smallest = kept.min()
        if self.threshold < 0:
            self.threshold.copy_(smallest)
        else:
            m = self.cfg.threshold_momentum
            self.threshold.mul_(m).add_((1 - m) * smallest)
