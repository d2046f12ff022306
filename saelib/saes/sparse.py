"""Sparse kernels for TopK-style SAEs: after the encoder, touch only the active latents.

With ``k`` of ``d_sae`` latents active per sample, the dense step spends five products of
``2 * batch * d_in * d_sae`` FLOP (encoder forward and weight gradient, decoder forward,
its two gradients), of which only the encoder forward is needed: every other product
reads or writes the code matrix ``f [batch, d_sae]``, which has ``nnz = batch * k``
non-zeros. Here the codes stay a list of entries (sample, latent, value) and

    x_hat      = f @ W_dec                   embedding_bag over the k rows of W_dec
    dL/dvals   = (g @ W_dec.T)[entries]       sampled_addmm: only the nnz dot products
    dL/dW_dec  = f.T @ g                     CSR [d_sae, batch] @ g: nnz rows of work
    dL/dW_enc  = x_in.T @ dL/dpre            CSR of dL/dpre (nnz entries) @ x_in

cost ``O(nnz * d_in)`` each instead of ``O(batch * d_sae * d_in)``. The pre-activation
gradient is non-zero only at the entries, because TopK (and BatchTopK) route the
gradient through the selected values alone (sparsify does the same with a Triton
kernel; here torch's sparse CSR ops, so CPU and CUDA alike).

``SAEOutput.pre_acts`` stays the differentiable dense ``pre``: a loss that uses it (the
dense ``losses.aux_k``) still gets exact gradients through the ordinary dense backward.
``tests/test_sparse.py`` checks values and gradients against the eager dense twin.

Two options of the training loop (``saelib.training``) change only how ``pre`` is made:

- a ``Workspace`` keeps ``pre`` in one buffer reused every step (then without a graph):
  a fresh ``[batch, d_sae]`` tensor is page-faulted in on every first touch, about 50 ms
  of a 1 s step at d_sae 18,432 on CPU;
- under ``torch.autocast`` (bf16) the product that *selects* the entries runs in bf16,
  while the entries' values are recomputed exactly in the weights' precision
  (``x_in[r] . W_enc[:, c] + b_enc[c]``, ``2 nnz d_in`` FLOP): codes, loss and every
  gradient are fp32; only which latent wins a near-tie at the k-th place can differ.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd import Function
from torch.nn import functional as F


class SparseCodes(NamedTuple):
    """Active entries of a code matrix ``f [batch, d_sae]``, sorted by sample, then latent.

    ``rows``/``cols``/``vals`` are ``[nnz]``; ``crow`` ``[batch + 1]`` and ``ccol``
    ``[d_sae + 1]`` are the CSR pointers of ``f`` and of ``f.T``; ``order`` ``[nnz]`` sorts
    the entries by latent (the CSR order of ``f.T``).
    """

    rows: Tensor
    cols: Tensor
    vals: Tensor
    crow: Tensor
    ccol: Tensor
    order: Tensor
    shape: tuple[int, int]

    def to_dense(self) -> Tensor:
        """The dense codes ``f [batch, d_sae]`` (differentiable in ``vals``)."""
        f = self.vals.new_zeros(self.shape)
        return f.index_put((self.rows, self.cols), self.vals)

    def fired(self) -> Tensor:
        """Bool ``[d_sae]``: latents with a positive code in some sample."""
        positive = (self.vals > 0).to(torch.uint8)  # no boolean indexing: no host sync
        out = torch.zeros(self.shape[1], dtype=torch.uint8, device=self.vals.device)
        return out.scatter_reduce_(0, self.cols, positive, "amax").bool()

    def l0(self) -> Tensor:
        """Mean number of positive codes per sample (a scalar tensor, no host sync)."""
        return (self.vals > 0).sum() / self.shape[0]


class Workspace:
    """Buffers reused across training steps (named, one per name); see the module doc.

    A buffer is only valid until the next ``get`` of its name: the training loop asks
    once per step and nothing keeps the previous step's ``pre`` alive.
    """

    def __init__(self):
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device) -> Tensor:
        """An uninitialised tensor ``shape``/``dtype`` on ``device``, the same memory as the
        last call with the same name and layout."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != device:
            self._buffers.pop(name, None)  # free the old one before allocating
            buf = self._buffers[name] = torch.empty(shape, dtype=dtype, device=device)
        return buf


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The lower precision ``torch.autocast`` is on for ``device``'s type, else None."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def _pointers(index: Tensor, size: int) -> Tensor:
    ptr = index.new_zeros(size + 1)
    torch.cumsum(torch.bincount(index, minlength=size), 0, out=ptr[1:])
    return ptr


def pattern(rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """CSR pointers ``crow``, ``ccol`` and the latent order of entries sorted by row.

    rows, cols: ``[nnz]`` long, sorted by ``rows`` (then ``cols`` within a row).
    """
    crow = _pointers(rows, shape[0])
    # Sort by (latent, sample) through a unique key: a stable sort is ~10x slower on CPU.
    order = torch.argsort(cols * shape[0] + rows)
    return crow, _pointers(cols, shape[1]), order


def topk_entries(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` of each row's ``k`` largest entries of ``pre [batch, d_sae]``."""
    idx = pre.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values  # [batch, k]
    rows = torch.arange(pre.shape[0], device=pre.device).repeat_interleave(k)
    return rows, idx.flatten()


def batch_topk_entries(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` of the ``k * batch`` largest entries of ``relu(pre)``."""
    flat = pre.flatten().topk(k * pre.shape[0], sorted=False).indices.sort().values
    return flat.div(pre.shape[1], rounding_mode="floor"), flat.remainder(pre.shape[1])


def _csr(crow: Tensor, col: Tensor, val: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta", once per process
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


class _GatherPre(Function):
    """``vals = pre[rows, cols]`` with ``pre = x_in @ W_enc + b_enc``, ``x_in = x - b_dec``.

    ``pre [batch, d_sae]`` comes in detached (computed once, densely); the backward sends
    the entries' gradient ``g [nnz]`` to the parameters through the sparse matrix
    ``G [batch, d_sae]`` that holds it: ``dW_enc = x_in.T @ G``, ``db_enc = G.sum(0)``,
    ``dx_in = G @ W_enc.T`` and ``db_dec = -dx_in.sum(0) = -W_enc @ G.sum(0)``.
    """

    @staticmethod
    def forward(ctx, pre, codes, x, b_dec, W_enc, b_enc):
        ctx.codes = codes._replace(vals=None)  # index tensors only
        ctx.save_for_backward(x, b_dec, W_enc)
        if pre.dtype == W_enc.dtype:
            return pre[codes.rows, codes.cols]
        # pre is a lower-precision copy (it only chose the entries): exact values instead
        x_in = x if b_dec is None else x - b_dec
        mask = _csr(codes.crow, codes.cols, x.new_zeros(codes.cols.shape), codes.shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            products = torch.sparse.sampled_addmm(mask, x_in, W_enc).values()
        return products + b_enc[codes.cols]

    @staticmethod
    def backward(ctx, g):
        codes = ctx.codes
        x, b_dec, W_enc = ctx.saved_tensors
        need_x, need_b_dec, need_W, need_b = ctx.needs_input_grad[2:6]
        grad_x = grad_b_dec = grad_W = grad_b = None
        if need_W:
            x_in = x if b_dec is None else x - b_dec
            g_t = _csr(codes.ccol, codes.rows[codes.order], g[codes.order], codes.shape[::-1])
            grad_W = (g_t @ x_in).T  # [d_in, d_sae]
        col_sum = None
        if need_b or need_b_dec:
            col_sum = g.new_zeros(codes.shape[1]).index_add_(0, codes.cols, g)  # [d_sae]
            grad_b = col_sum if need_b else None
        if need_x:
            grad_x = _csr(codes.crow, codes.cols, g, codes.shape) @ W_enc.T.contiguous()
        if need_b_dec:
            grad_b_dec = -(W_enc @ col_sum)
        return None, None, grad_x, grad_b_dec, grad_W, grad_b


class _Decode(Function):
    """``x_hat = f @ W_dec`` (no bias) for sparse codes ``f``; ``vals [nnz]`` differentiable."""

    @staticmethod
    def forward(ctx, vals, codes, W_dec):
        ctx.codes = codes._replace(vals=None)
        ctx.save_for_backward(vals, W_dec)
        return F.embedding_bag(
            codes.cols, W_dec, codes.crow, mode="sum", per_sample_weights=vals,
            include_last_offset=True,
        )  # fmt: skip

    @staticmethod
    def backward(ctx, g):
        codes = ctx.codes
        vals, W_dec = ctx.saved_tensors
        grad_vals = grad_W = None
        if ctx.needs_input_grad[0]:  # (g @ W_dec.T) at the entries only
            mask = _csr(codes.crow, codes.cols, vals.new_zeros(vals.shape), codes.shape)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                grad_vals = torch.sparse.sampled_addmm(mask, g, W_dec.T).values()
        if ctx.needs_input_grad[2]:
            f_t = _csr(codes.ccol, codes.rows[codes.order], vals[codes.order], codes.shape[::-1])
            grad_W = f_t @ g  # [d_sae, d_in]
        return grad_vals, None, grad_W


def gather_pre(
    pre: Tensor, codes: SparseCodes, x: Tensor, b_dec: Tensor | None, W_enc: Tensor, b_enc: Tensor
) -> Tensor:
    """Values of ``pre`` at ``codes``'s entries, ``[nnz]``, with sparse encoder gradients.

    pre: ``[batch, d_sae]``, equal to ``(x - b_dec) @ W_enc + b_enc`` (``b_dec`` None: no
    subtraction), or a lower-precision copy of it (then the values are recomputed in
    ``W_enc``'s dtype). Only ``codes.rows``/``cols``/pointers are used, not ``codes.vals``.
    """
    return _GatherPre.apply(pre.detach(), codes, x, b_dec, W_enc, b_enc)


def decode(vals: Tensor, codes: SparseCodes, W_dec: Tensor) -> Tensor:
    """``f @ W_dec`` for the sparse codes with values ``vals [nnz]``: ``[batch, d_in]``."""
    return _Decode.apply(vals, codes, W_dec)


class _Rows(Function):
    """``W.index_select(dim, idx)`` for unique ``idx`` whose backward copies, not adds.

    Autograd's backward of ``index_select`` is a scatter-add, slow on CPU; with unique
    indices a zero-filled gradient and ``index_copy_`` give the same result.
    """

    @staticmethod
    def forward(ctx, W, dim, idx):
        ctx.dim, ctx.shape = dim, W.shape
        ctx.save_for_backward(idx)
        return W.index_select(dim, idx)

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        return g.new_zeros(ctx.shape).index_copy_(ctx.dim, idx, g), None, None


def select_unique(W: Tensor, dim: int, idx: Tensor) -> Tensor:
    """``W.index_select(dim, idx)`` for unique ``idx`` [m], with a copying backward."""
    return _Rows.apply(W, dim, idx)


def make_codes(rows: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> SparseCodes:
    """Bundle entries sorted by row (then latent) with their CSR pointers."""
    crow, ccol, order = pattern(rows, cols, shape)
    return SparseCodes(rows, cols, vals, crow, ccol, order, shape)
