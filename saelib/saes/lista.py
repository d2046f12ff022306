"""LISTA SAE: an encoder that unrolls ISTA with learned weights, the usual linear decoder.

Gregor & LeCun 2010 (Learning fast approximations of sparse coding, ICML) truncate ISTA to a
few steps and learn its matrices and thresholds. Here each step is written with the SAE's own
decoder, so step ``t`` corrects the codes by the reconstruction error it sees::

    z_0     = ReLU((x - b_dec) @ W_enc + b_enc)                    # the ReLU SAE's encoder
    r_t     = z_t @ W_dec + b_dec - x                              # residual of decoding z_t
    p_{t+1} = z_t - r_t @ W_steps[t] - thresholds[t]               # W_steps[t] [d_in, d_sae]
    z_{t+1} = ReLU(p_{t+1}),   t = 0 .. lista_steps - 1
    f = z_T,  pre_acts = p_T (p_0 when lista_steps = 0),  x_hat = f @ W_dec + b_dec

One ISTA step for ``0.5 ||x - z D||^2 + l ||z||_1`` (``z >= 0``) is this step with
``W_steps[t] = D^T / L`` and ``thresholds[t] = l / L`` (``L = ||D||_2^2``, the step size):
that is how the steps start (thresholds at 0), then they are learned. With ``lista_steps = 0``
the encoder is the ReLU SAE's, the same function and, for the same seed, the same weights.
The training loss is the ReLU SAE's: ``||x - x_hat||^2 + lambda * penalty(f)``.

Encoding costs ``2 d_in d_sae (1 + 2 lista_steps)`` FLOPs per sample (``saelib.flops``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from saelib.saes.base import LinearEncoderSAE, SAEOutput, penalty
from saelib.saes.config import SAEConfig


class LISTASAE(LinearEncoderSAE):
    @property
    def needs_unit_decoder(self) -> bool:
        return self.cfg.sparsity_penalty == "l1"

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        steps = cfg.lista_steps
        self.W_steps = nn.Parameter(torch.empty(steps, cfg.d_in, cfg.d_sae))
        self.thresholds = nn.Parameter(torch.zeros(steps, cfg.d_sae))
        self._ista_steps_()

    @torch.no_grad()
    def _ista_steps_(self) -> None:
        """``W_steps[t] = W_dec^T / L`` for every step, ``L`` the squared spectral norm."""
        W = self.W_dec.detach()
        lipschitz = torch.linalg.matrix_norm(W, ord=2).square().clamp_min(1e-12)
        self.W_steps.copy_((W.T / lipschitz).expand_as(self.W_steps))

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.linear_pre_acts(x)
        z = pre.relu()
        for t in range(self.cfg.lista_steps):
            residual = self.decode(z) - x
            pre = z - residual @ self.W_steps[t] - self.thresholds[t]
            z = pre.relu()
        return z, pre

    def sparsity(self, out: SAEOutput) -> Tensor:
        return penalty(
            self.cfg.sparsity_penalty, out.f, self.W_dec, self.cfg.tanh_scale, nonnegative=True
        )

    def dictionary_set_(self) -> None:
        """A new decoder (a known dictionary): every step back at ISTA's ``W_dec^T / L``."""
        self._ista_steps_()

    @torch.no_grad()
    def init_encoder_from_decoder_(self) -> None:
        """``W_enc = W_dec^T`` and every step back at ISTA's ``W_dec^T / L``."""
        super().init_encoder_from_decoder_()
        self._ista_steps_()
