"""Matching-pursuit SAE (MP-SAE; Costa et al. 2025, *From Flat to Hierarchical: Extracting
Sparse Representations with Matching Pursuit*, arXiv:2506.03093).

The encoder is a few steps of matching pursuit on the decoder's own (unit-norm) atoms,
so inference-time optimisation is built into the SAE. With ``x_c = x - b_dec``:

    r_0 = x_c,  f = 0
    step t:  i_t = argmax_i ReLU(<r_{t-1}, d_i>)      # the atom most aligned with r
             v_t = ReLU(<r_{t-1}, d_{i_t}>)
             f[i_t] += v_t,  r_t = r_{t-1} - v_t d_{i_t}
    x_hat = f @ W_dec + b_dec

for at most ``mp_steps`` steps (``None``: ``d_in``), a sample stopping once its support
stops changing (an atom picked again, or no atom correlates positively:
``mp_stop_on_repeat``) or its residual norm falls below ``mp_residual_threshold``: the
semantics of SAELens's ``matching_pursuit`` SAE. The selection carries no gradient; the
values do, through the residual and the chosen atoms, so the decoder learns from the
whole pursuit. No sparsity penalty: the steps bound L0. ``pre_acts`` are the first
step's correlations ``x_c @ W_dec.T`` (what aux-k would rank dead latents by).
"""

from __future__ import annotations

import torch
from torch import Tensor

from saelib.saes.base import SAE, SAEOutput


def matching_pursuit_codes(
    x_c: Tensor,
    W_dec: Tensor,
    max_steps: int,
    residual_threshold: float = 0.0,
    stop_on_repeat: bool = True,
    first_corr: Tensor | None = None,
) -> Tensor:
    """Non-negative matching-pursuit codes ``f [batch, d_sae]`` of ``x_c [batch, d_in]`` on
    the rows of ``W_dec [d_sae, d_in]`` (unit norm), differentiable in both.

    ``first_corr``: ``x_c @ W_dec.T`` if already computed (it selects the first atoms).
    """
    residual = x_c
    f = torch.zeros(x_c.shape[0], W_dec.shape[0], dtype=x_c.dtype, device=x_c.device)
    previous = torch.zeros(f.shape, dtype=torch.bool, device=f.device)
    done = torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
    for step in range(max_steps):
        with torch.no_grad():
            corr = first_corr.detach() if step == 0 and first_corr is not None else None
            corr = residual @ W_dec.T if corr is None else corr
            index = corr.relu().max(dim=1, keepdim=True).indices  # [batch, 1], first max
        atoms = W_dec[index.squeeze(1)]  # [batch, d_in]
        values = (residual * atoms).sum(dim=-1, keepdim=True).relu()
        values = values * (~done).unsqueeze(1).to(values.dtype)
        f = f.scatter_add(1, index, values)
        residual = residual - values * atoms
        if stop_on_repeat or residual_threshold > 0:
            with torch.no_grad():
                if stop_on_repeat:
                    support = f != 0
                    done = done | (support == previous).all(dim=1)
                    previous = support
                if residual_threshold > 0:
                    done = done | (residual.norm(dim=-1) < residual_threshold)
                if bool(done.all()):
                    break
    return f


class MatchingPursuitSAE(SAE):
    @property
    def needs_unit_decoder(self) -> bool:
        return True  # a pursuit step subtracts <r, d> d: a projection only for unit atoms

    @property
    def max_steps(self) -> int:
        return self.cfg.mp_steps if self.cfg.mp_steps is not None else self.cfg.d_in

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_c = self.encoder_input(x)
        pre = x_c @ self.W_dec.T  # [batch, d_sae]: the first step's correlations
        f = matching_pursuit_codes(
            x_c, self.W_dec, self.max_steps, self.cfg.mp_residual_threshold,
            self.cfg.mp_stop_on_repeat, first_corr=pre,
        )  # fmt: skip
        return f, pre

    def sparsity(self, out: SAEOutput) -> Tensor:
        return out.x_hat.new_zeros(())  # the number of steps bounds L0
