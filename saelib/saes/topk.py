"""TopK and BatchTopK SAEs: sparsity by construction, no penalty.

TopK (Gao et al. 2024):       f = ReLU(TopK_k((x - b_dec) @ W_enc + b_enc)), per sample.
BatchTopK (Bussmann et al. 2024): keep the ``k * batch`` largest pre-activations of the
whole batch, so L0 varies per sample with mean k. At inference, where there is no batch,
a latent fires when its pre-activation exceeds a threshold estimated during training
(a running mean of the smallest activation kept per batch).

Training can take the sparse path (``sparse_loss``, ``sparse_aux_k``; saelib.saes.sparse):
the same values and gradients, with the decoder and the encoder's weight gradient
touching only the ``k`` active latents. ``forward``/``loss`` stay the eager dense twin.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saelib import distributed, losses
from saelib.saes import sparse
from saelib.saes.base import LinearEncoderSAE, LossOutput, SAEOutput, _Affine
from saelib.saes.config import SAEConfig


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
        return out.x_hat.new_zeros(())  # sparsity is enforced by the activation

    # -- the sparse training path -----------------------------------------------------
    def training_loss(
        self,
        x: Tensor,
        sparsity_coeff: float = 0.0,
        *,
        sparse: bool = True,
        workspace: sparse.Workspace | None = None,
    ) -> LossOutput:
        if sparse and self.training:
            return self.sparse_loss(x, sparsity_coeff, workspace=workspace)
        return self.loss(x, sparsity_coeff)

    def aux_k_loss(
        self, x: Tensor, residual: Tensor, out: SAEOutput, dead: Tensor, k_aux: int
    ) -> Tensor:
        if out.codes is None:  # the dense path
            return super().aux_k_loss(x, residual, out, dead, k_aux)
        return self.sparse_aux_k(x, residual, out.pre_acts, dead, k_aux)

    def _entries(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        return sparse.topk_entries(pre, self.cfg.k)

    def _gather(self, pre: Tensor, codes: sparse.SparseCodes, x: Tensor) -> Tensor:
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        return sparse.gather_pre(pre, codes, x, b_dec, self.W_enc, self.b_enc).relu()

    @torch.no_grad()
    def _selecting_pre_acts(
        self, x: Tensor, dtype: torch.dtype, workspace: sparse.Workspace | None
    ) -> Tensor:
        """``pre [batch, d_sae]`` in ``dtype``, without a graph, in the workspace's buffer."""
        shape = (x.shape[0], self.cfg.d_sae)
        out = workspace.get("pre", shape, dtype, x.device) if workspace is not None else None
        x_in = self.encoder_input(x).to(dtype)
        return torch.addmm(self.b_enc.to(dtype), x_in, self.W_enc.to(dtype), out=out)

    def sparse_forward(self, x: Tensor, workspace: sparse.Workspace | None = None) -> SAEOutput:
        """``forward`` without dense codes: ``SAEOutput(x_hat, None, pre_acts, codes)``.

        Values and gradients equal the dense twin's; only the encoder product is dense.
        With a ``workspace``, ``pre_acts`` lives in its reused buffer and has no graph;
        under ``torch.autocast`` it is the lower-precision product that chose the entries,
        and the codes' values are recomputed exactly (``saelib.saes.sparse``).
        """
        low = sparse.autocast_dtype(x.device)
        with torch.autocast(x.device.type, enabled=False):  # the precision is chosen here
            if low is None and workspace is None:
                pre = self.linear_pre_acts(x)  # its dense backward runs only if used
            else:
                pre = self._selecting_pre_acts(x, low or self.W_enc.dtype, workspace)
            with torch.no_grad():
                rows, cols = self._entries(pre)
            codes = sparse.make_codes(rows, cols, None, tuple(pre.shape))
            vals = self._gather(pre, codes, x)  # [nnz]
            codes = codes._replace(vals=vals)
            x_hat = sparse.decode(vals, codes, self.W_dec) + self.b_dec
        return SAEOutput(x_hat, None, pre, codes)

    def sparse_loss(
        self, x: Tensor, sparsity_coeff: float = 0.0, *, workspace: sparse.Workspace | None = None
    ) -> LossOutput:
        """``loss`` on the sparse path: the same total and terms, ``output.f`` is None."""
        out = self.sparse_forward(x, workspace)
        terms = {"mse": losses.mse(x, out.x_hat), "sparsity": self.sparsity(out)}
        return LossOutput(terms["mse"] + sparsity_coeff * terms["sparsity"], terms, out)

    def sparse_aux_k(
        self, x: Tensor, residual: Tensor, pre_acts: Tensor, dead: Tensor, k_aux: int
    ) -> Tensor:
        """``losses.aux_k(residual, pre_acts, dead, W_dec, k_aux)`` on the sparse path.

        The top-k search runs over the dead latents' columns only, and the reconstruction
        and its gradients touch the ``k_aux`` chosen latents per sample; no second dense
        product. x: ``[batch, d_in]`` the SAE input (for the encoder gradient).
        """
        dead_idx = dead.nonzero().squeeze(1)  # [n_dead], ascending; sets the shapes below
        n_dead = dead_idx.numel()
        if n_dead == 0:
            return residual.new_zeros(())
        k = min(k_aux, n_dead)
        with torch.autocast(x.device.type, enabled=False):  # values in the weights' dtype
            if k * DENSE_AUX_DENSITY >= n_dead:
                return self._aux_k_dead_columns(x, residual, pre_acts, dead_idx, k)
            return self._aux_k_entries(x, residual, pre_acts, dead_idx, k)

    def _aux_k_entries(
        self, x: Tensor, residual: Tensor, pre_acts: Tensor, dead_idx: Tensor, k: int
    ) -> Tensor:
        """Aux-k on ``k`` entries per sample chosen among the dead columns."""
        n_dead = dead_idx.numel()
        with torch.no_grad():
            all_dead = n_dead == pre_acts.shape[1]
            dead_pre = pre_acts if all_dead else pre_acts.index_select(1, dead_idx)
            idx = dead_pre.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values
            cols = dead_idx[idx].flatten()
            rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(k)
        codes = sparse.make_codes(rows, cols, None, tuple(pre_acts.shape))
        vals = self._gather(pre_acts, codes, x)
        return losses.mse(residual, sparse.decode(vals, codes, self.W_dec))

    def _aux_k_dead_columns(
        self, x: Tensor, residual: Tensor, pre_acts: Tensor, dead_idx: Tensor, k: int
    ) -> Tensor:
        """Aux-k with dense products over the dead latents' columns only.

        When ``k`` is a sizeable fraction of the dead latents, four GEMMs of
        ``batch x d_in x n_dead`` beat sparse ops on ``batch * k`` entries.
        """
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        W_enc_d = sparse.select_unique(self.W_enc, 1, dead_idx)  # [d_in, n_dead]
        b_enc_d = sparse.select_unique(self.b_enc, 0, dead_idx)
        given = pre_acts.detach().index_select(1, dead_idx)  # [batch, n_dead]
        if given.dtype == W_enc_d.dtype:
            pre_d = _AffineGiven.apply(given, x, b_dec, W_enc_d, b_enc_d)  # same values
        else:  # given only chooses; the values in the weights' precision
            pre_d = _Affine.apply(x, b_dec, W_enc_d, b_enc_d)
        idx = given.topk(k, dim=-1, sorted=False).indices  # [batch, k]
        codes = torch.zeros_like(pre_d).scatter(-1, idx, pre_d.gather(-1, idx).relu())
        return losses.mse(residual, codes @ sparse.select_unique(self.W_dec, 0, dead_idx))


# Aux-k goes dense over the dead columns when k_aux >= n_dead / DENSE_AUX_DENSITY.
DENSE_AUX_DENSITY = 64


class _AffineGiven(_Affine):
    """``_Affine`` whose forward value is given (already computed): only the backward."""

    @staticmethod
    def forward(ctx, given, x, b_dec, W_enc, b_enc):
        ctx.save_for_backward(x if b_dec is None else x - b_dec, W_enc)
        return given.clone()

    @staticmethod
    def backward(ctx, g):
        return None, *_Affine.backward(ctx, g)


class BatchTopKSAE(TopKSAE):
    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        # Inference threshold; negative means "not estimated yet".
        self.register_buffer("threshold", torch.tensor(-1.0))
        self.batch_group = None
        """Process group whose ranks hold slices of one training batch (set by
        ``saelib.distributed.DataParallelTrainer``): the ``k * batch`` largest are then
        chosen over the global batch, and the threshold is its smallest kept value."""

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.linear_pre_acts(x)
        if self.training and self.batch_group is not None:
            rows, cols = self._entries(pre)
            f = torch.zeros_like(pre).index_put((rows, cols), pre[rows, cols].relu())
            return f, pre
        if self.training or self.threshold < 0:
            return batch_topk_activation(pre, self.cfg.k), pre
        return pre * (pre > self.threshold), pre

    def _entries(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        if self.batch_group is not None:
            return distributed.global_batch_topk_entries(pre, self.cfg.k, self.batch_group)
        return sparse.batch_topk_entries(pre, self.cfg.k)

    def sparse_forward(self, x: Tensor, workspace: sparse.Workspace | None = None) -> SAEOutput:
        if not self.training:
            raise ValueError("BatchTopKSAE.sparse_forward is for training (call sae.train())")
        return super().sparse_forward(x, workspace)

    @torch.no_grad()
    def update_statistics(self, out: SAEOutput) -> None:
        """Running mean of the smallest kept activation (the batch's effective threshold).

        No host sync: a batch with no positive code leaves the threshold unchanged.
        """
        kept = out.f if out.codes is None else out.codes.vals
        smallest = kept.masked_fill(kept <= 0, float("inf")).min()
        if self.batch_group is not None:  # the smallest kept over the global batch
            torch.distributed.all_reduce(smallest, torch.distributed.ReduceOp.MIN, self.batch_group)
        m = self.cfg.threshold_momentum
        moved = self.threshold * m + (1 - m) * smallest
        new = torch.where(self.threshold < 0, smallest, moved)
        self.threshold.copy_(torch.where(torch.isfinite(smallest), new, self.threshold))
