"""Matryoshka BatchTopK SAE: nested prefixes of the dictionary each reconstruct the input.

Bussmann et al. 2025 (*Learning Multi-Level Features with Matryoshka Sparse Autoencoders*,
arXiv:2503.17547) and Nabeshima 2024. The latents are ordered; ``matryoshka_widths``
``m_1 < m_2 < ... < m_G = d_sae`` mark nested prefixes. Codes are BatchTopK's over all
latents (``f``, mean L0 ``k``), and the loss adds, for every inner prefix, the error of
reconstructing from that prefix alone:

    x_hat_g = f[:, :m_g] @ W_dec[:m_g] + b_dec
    loss    = ||x - x_hat_G||^2 + sum_{g < G} ||x - x_hat_g||^2      (mean over the batch)

so the first latents must explain as much as they can without the later ones, which
keeps a general feature from being absorbed into its specific ones. The outer level is
the ordinary reconstruction (``mse``); ``inner_mse`` is the sum over the inner levels, at
weight 1 as in SAELens's ``matryoshka_batchtopk``. Inference is BatchTopK's: a fixed
threshold estimated in training (SAELens saves these SAEs as JumpReLU).
"""

from __future__ import annotations

from torch import Tensor

from saelib import losses
from saelib.saes import sparse
from saelib.saes.base import LossOutput, SAEOutput
from saelib.saes.topk import BatchTopKSAE

PREFIX_FRACTIONS = (1 / 16, 1 / 4, 1.0)
"""The book's nesting: prefixes of 1/16, 1/4 and all of the latents (Bussmann et al. nest a
few prefixes growing geometrically)."""


def prefix_widths(d_sae: int, fractions: tuple[float, ...] = PREFIX_FRACTIONS) -> tuple[int, ...]:
    """``matryoshka_widths`` for ``d_sae`` latents: ``fractions`` of it, rounded, each at
    least 1, increasing, the last ``d_sae`` (e.g. 128 -> (8, 32, 128))."""
    return tuple(sorted({max(1, round(f * d_sae)) for f in fractions} | {d_sae}))


class MatryoshkaSAE(BatchTopKSAE):
    def inner_mse(self, x: Tensor, out: SAEOutput) -> Tensor:
        """``sum_{g < G} mean_b ||x - x_hat_g||^2`` over the inner prefixes (scalar).

        The prefix reconstructions are built level by level (each adds its slice of
        latents to the previous one): ``2 m_{G-1} d_in`` FLOP per sample on the dense
        path, ``2 nnz d_in`` per level on the sparse path.
        """
        total = x.new_zeros(())
        if out.codes is None:  # the dense twin
            partial, start = self.b_dec, 0
            for width in self.cfg.matryoshka_widths[:-1]:
                partial = partial + out.f[:, start:width] @ self.W_dec[start:width]
                total = total + losses.mse(x, partial)
                start = width
            return total
        codes = out.codes
        for width in self.cfg.matryoshka_widths[:-1]:
            vals = codes.vals * (codes.cols < width)  # the prefix's entries only
            total = total + losses.mse(x, sparse.decode(vals, codes, self.W_dec) + self.b_dec)
        return total

    def loss(self, x: Tensor, sparsity_coeff: float = 0.0) -> LossOutput:
        return self._with_inner(x, super().loss(x, sparsity_coeff))

    def sparse_loss(self, x: Tensor, sparsity_coeff: float = 0.0, *, workspace=None) -> LossOutput:
        return self._with_inner(x, super().sparse_loss(x, sparsity_coeff, workspace=workspace))

    def _with_inner(self, x: Tensor, base: LossOutput) -> LossOutput:
        inner = self.inner_mse(x, base.output)
        return LossOutput(base.total + inner, {**base.terms, "inner_mse": inner}, base.output)
