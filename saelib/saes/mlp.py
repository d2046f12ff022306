"""MLP-encoder SAE: a deep encoder, the usual linear decoder.

    h_0 = x - b_dec;  h_{i+1} = ReLU(h_i @ W_i + b_i)      # hidden widths cfg.mlp_hidden
    f   = act(h_L @ W_out + b_out)                         # act: ReLU (+ penalty) or TopK
    x_hat = f @ W_dec + b_dec

A richer encoder can narrow the amortisation gap, the error a one-layer encoder makes
against the best sparse code for the same dictionary (O'Neill, Gumran & Klindt 2024).
"""

from __future__ import annotations

from torch import Tensor, nn

from saelib.saes.base import SAE, SAEOutput, penalty
from saelib.saes.config import SAEConfig
from saelib.saes.topk import topk_activation


class MLPSAE(SAE):
    @property
    def needs_unit_decoder(self) -> bool:
        return self.cfg.sparsity_penalty == "l1"

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        widths = (cfg.d_in, *cfg.mlp_hidden, cfg.d_sae)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            linear = nn.Linear(fan_in, fan_out)
            with_generator_init(linear, self._init_linear)
            layers.append(linear)
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.encoder = nn.Sequential(*layers)

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.encoder(self.encoder_input(x))
        if self.cfg.mlp_output == "topk":
            return topk_activation(pre, self.cfg.k), pre
        return pre.relu(), pre

    def sparsity(self, out: SAEOutput) -> Tensor:
        if self.cfg.mlp_output == "topk":
            return out.f.new_zeros(())
        return penalty(self.cfg.sparsity_penalty, out.f, self.W_dec, self.cfg.tanh_scale)


def with_generator_init(linear: nn.Linear, init) -> None:
    """Re-initialise ``linear`` from the SAE's seeded generator (reproducible weights)."""
    fan_in = linear.in_features
    linear.weight = init(fan_in, tuple(linear.weight.shape))
    linear.bias = init(fan_in, tuple(linear.bias.shape))
