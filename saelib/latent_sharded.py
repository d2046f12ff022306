"""A TopK SAE too wide for one device: its latents split across the ranks of a group.

Rank ``r`` holds a contiguous block of latents (encoder columns ``W_enc[:, lo:hi]``,
``b_enc[lo:hi]``, decoder rows ``W_dec[lo:hi]``; ``b_dec`` on every rank) and every rank
sees the whole batch ``x [batch, d_in]`` (Gao et al. 2024 shard latents this way, with data
parallelism across groups). A forward pass:

    pre_r  = (x - b_dec) @ W_enc[:, lo:hi] + b_enc[lo:hi]       [batch, hi - lo]
    local top-k of pre_r -> all-gather (values, latent ids) -> the global top-k per row
    f_r    = ReLU(pre_r) on this rank's chosen latents, 0 elsewhere
    x_hat  = sum_r f_r @ W_dec[lo:hi] + b_dec                     one all-reduce

The sum over ranks is an all-reduce whose backward is the identity: each rank's partial
reconstruction enters the loss once, so ``dL/d partial_r = dL/d x_hat``. PyTorch's
differentiable all-reduce (``torch.distributed.nn.functional.all_reduce``) all-reduces the
gradient too, which, when every rank computes the same loss, multiplies the gradients by
the world size: the known pitfall. Conversely ``b_dec`` enters every rank's encoder, so
the encoder's share of its gradient is summed over ranks (identity forward, all-reduce
backward; Megatron-LM's "f" and "g" operators, Shoeybi et al. 2019).

Ties: a latent is chosen by (value descending, latent id ascending), on each rank and
across ranks, so ties at the k-th value go to the lowest latent ids, whatever the number
of ranks (one process's ``torch.topk`` leaves the choice among ties unspecified).

Aux-k (``aux_k_loss``) chooses its ``k_aux`` dead latents across ranks the same way, and
``gather_sae`` concatenates the blocks into one ordinary ``TopKSAE``. The module offers what
the Trainer calls on an SAE; ``saelib.latent_sharded_training.LatentShardedTrainer`` trains
it (per-rank checkpoints, dead latents per block). Codes are dense within each block (the
sparse training path of ``saelib.saes.sparse`` is not used here).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd import Function

from saelib import distributed, losses
from saelib.saes import SAEConfig, make_sae
from saelib.saes.base import SAE, LinearEncoderSAE, LossOutput, SAEOutput
from saelib.saes.topk import TopKSAE

__all__ = [
    "LatentShardedTopK",
    "assemble",
    "global_topk_mask",
    "shard_bounds",
    "sum_over_ranks",
    "summed_gradient",
]


class _SumForward(Function):
    """All-reduce (sum) forward, identity backward."""

    @staticmethod
    def forward(ctx, x, group):
        y = x.clone()
        dist.all_reduce(y, dist.ReduceOp.SUM, group=group)
        return y

    @staticmethod
    def backward(ctx, g):
        return g, None


class _SumBackward(Function):
    """Identity forward, all-reduce (sum) of the gradient backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g, dist.ReduceOp.SUM, group=ctx.group)
        return g, None


def sum_over_ranks(x: Tensor, group=None) -> Tensor:
    """``sum_r x_r`` on every rank; the gradient of each ``x_r`` is the output's gradient."""
    return _SumForward.apply(x, group)


def summed_gradient(x: Tensor, group=None) -> Tensor:
    """``x`` itself; its gradient is summed over the ranks (for a replicated input that
    feeds a computation split across them)."""
    return _SumBackward.apply(x, group)


def shard_bounds(d_sae: int, n_ranks: int, rank: int) -> tuple[int, int]:
    """``(lo, hi)``: rank ``rank``'s contiguous block of ``d_sae`` latents (sizes differ by
    at most one, the larger blocks first)."""
    base, extra = divmod(d_sae, n_ranks)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


@torch.no_grad()
def global_topk_mask(pre: Tensor, k: int, lo: int, group=None) -> Tensor:
    """``[batch, hi - lo]`` bool: this rank's latents among each row's global top ``k``.

    ``pre [batch, hi - lo]`` holds latents ``lo .. hi - 1``. Order: value descending, then
    latent id ascending (ties to the lowest ids).
    """
    n_local = pre.shape[1]
    kk = min(k, n_local)
    vals, idx = pre.sort(dim=-1, descending=True, stable=True)  # ties: lowest id first
    vals, ids = vals[:, :kk].contiguous(), idx[:, :kk] + lo  # [batch, kk]
    n_ranks = distributed.world_size(group)
    all_vals = [torch.empty_like(vals) for _ in range(n_ranks)]
    all_ids = [torch.empty_like(ids) for _ in range(n_ranks)]
    dist.all_gather(all_vals, vals, group=group)
    dist.all_gather(all_ids, ids, group=group)
    vals, ids = torch.cat(all_vals, dim=1), torch.cat(all_ids, dim=1)  # [batch, n_ranks kk]
    by_id = ids.argsort(dim=-1, stable=True)
    vals, ids = vals.gather(1, by_id), ids.gather(1, by_id)
    top = vals.sort(dim=-1, descending=True, stable=True).indices[:, :k]
    chosen = ids.gather(1, top) - lo  # [batch, k]: this rank's where in [0, n_local)
    mine = (chosen >= 0) & (chosen < n_local)
    mask = torch.zeros(pre.shape[0], n_local + 1, dtype=torch.bool, device=pre.device)
    mask.scatter_(1, torch.where(mine, chosen, n_local), True)  # others into a spare column
    return mask[:, :n_local]


LATENT_DIMS = {"W_enc": 1, "b_enc": 0, "W_dec": 0}
"""The dimension along which each sharded parameter holds its latents (``b_dec``: none)."""


class LatentShardedTopK(nn.Module):
    """This rank's block of a TopK SAE's latents (see the module docstring).

    Parameters: ``W_enc [d_in, hi - lo]``, ``b_enc [hi - lo]``, ``W_dec [hi - lo, d_in]``,
    ``b_dec [d_in]`` (the same on every rank). ``cfg`` is the whole SAE's config (its
    ``d_sae`` counts every rank's latents). It offers what ``saelib.training.Trainer``
    calls on an SAE, so ``LatentShardedTrainer`` trains it with the Trainer's loop.
    """

    def __init__(self, cfg: SAEConfig, W_enc, b_enc, W_dec, b_dec, lo: int, group=None):
        super().__init__()
        self.W_enc, self.b_enc = nn.Parameter(W_enc), nn.Parameter(b_enc)
        self.W_dec, self.b_dec = nn.Parameter(W_dec), nn.Parameter(b_dec)
        self.cfg, self.lo, self.group = cfg, lo, group
        self.k, self.d_sae = cfg.k, cfg.d_sae

    @classmethod
    def from_sae(cls, sae: TopKSAE, group=None) -> LatentShardedTopK:
        """This rank's block of ``sae`` (a TopK SAE, untied, b_dec applied to the input)."""
        cfg = sae.cfg
        if cfg.architecture != "topk" or cfg.tied or not cfg.apply_b_dec_to_input:
            raise ValueError(
                f"LatentShardedTopK shards an untied topk SAE with apply_b_dec_to_input=True, "
                f"got architecture={cfg.architecture!r}, tied={cfg.tied}, "
                f"apply_b_dec_to_input={cfg.apply_b_dec_to_input}"
            )
        n_ranks, rank = distributed.world_size(group), distributed.rank(group)
        if cfg.d_sae < n_ranks:
            raise ValueError(f"SAEConfig.d_sae={cfg.d_sae} must be at least the {n_ranks} ranks")
        lo, hi = shard_bounds(cfg.d_sae, n_ranks, rank)
        with torch.no_grad():
            parts = (sae.W_enc[:, lo:hi], sae.b_enc[lo:hi], sae.W_dec[lo:hi], sae.b_dec)
            parts = [p.detach().clone() for p in parts]
        return cls(cfg, *parts, lo=lo, group=group)

    @property
    def hi(self) -> int:
        """One past this rank's last latent."""
        return self.lo + self.W_dec.shape[0]

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f, pre)``, both ``[batch, hi - lo]``: this rank's codes and pre-activations."""
        b_dec = summed_gradient(self.b_dec, self.group)  # the encoder's share, from every rank
        pre = torch.addmm(self.b_enc, x - b_dec, self.W_enc)
        mask = global_topk_mask(pre, self.k, self.lo, self.group)
        return pre.relu() * mask, pre

    def forward(self, x: Tensor) -> SAEOutput:
        """``SAEOutput(x_hat [batch, d_in] (the same on every rank), f, pre)``, f and pre
        this rank's ``[batch, hi - lo]``."""
        f, pre = self.encode(x)
        x_hat = sum_over_ranks(f @ self.W_dec, self.group) + self.b_dec
        return SAEOutput(x_hat, f, pre)

    def loss(self, x: Tensor, sparsity_coeff: float = 0.0) -> LossOutput:
        """``mse(x, x_hat)``, the same value on every rank; its terms are the unsharded
        TopK SAE's (``sparsity`` is 0: TopK has no sparsity term)."""
        out = self(x)
        terms = {"mse": losses.mse(x, out.x_hat), "sparsity": out.x_hat.new_zeros(())}
        return LossOutput(terms["mse"], terms, out)

    def training_loss(
        self, x: Tensor, sparsity_coeff: float = 0.0, *, sparse: bool = True, workspace=None
    ):
        """``loss``: one path (dense codes of this rank's block), whatever ``sparse`` says."""
        return self.loss(x, sparsity_coeff)

    def aux_k_loss(
        self, x: Tensor, residual: Tensor, out: SAEOutput, dead: Tensor, k_aux: int
    ) -> Tensor:
        """Aux-k over the dead latents of every rank: ``losses.aux_k`` of the whole SAE.

        ``dead [hi - lo]`` is this rank's block of the dead mask; the ``min(k_aux, n_dead)``
        largest dead pre-activations per row are chosen across ranks (``global_topk_mask``,
        live latents at -inf) and their reconstruction of ``residual [batch, d_in]`` is
        summed over ranks. The same value on every rank; 0 when no latent is dead.
        """
        n_dead = dead.sum()
        dist.all_reduce(n_dead, dist.ReduceOp.SUM, group=self.group)
        if int(n_dead) == 0:
            return out.pre_acts.new_zeros(())
        masked = out.pre_acts.detach().masked_fill(~dead, float("-inf"))  # live never win
        mask = global_topk_mask(masked, min(k_aux, int(n_dead)), self.lo, self.group)
        recon = sum_over_ranks((out.pre_acts.relu() * mask) @ self.W_dec, self.group)
        return losses.mse(residual, recon)

    # What the Trainer calls on any SAE; row- and column-wise, so a block does its own.
    needs_unit_decoder = False
    normalize_decoder_ = SAE.normalize_decoder_
    project_decoder_grad_ = SAE.project_decoder_grad_
    init_encoder_from_decoder_ = LinearEncoderSAE.init_encoder_from_decoder_
    update_statistics = SAE.update_statistics

    def gather_blocks(self, t: Tensor, dim: int) -> Tensor:
        """Every rank's block ``t`` (latents along ``dim``, ``hi - lo`` of them) concatenated
        in latent order (``d_sae``): codes, parameters, the trainer's dead-latent counters.
        A collective: every rank calls it and gets the result."""
        n_ranks = distributed.world_size(self.group)
        sizes = [b - a for a, b in (shard_bounds(self.d_sae, n_ranks, r) for r in range(n_ranks))]
        t = t.detach().movedim(dim, 0)
        padded = t.new_zeros(max(sizes), *t.shape[1:])  # all_gather needs equal shapes
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(n_ranks)]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).movedim(0, dim)

    def gather_codes(self, f: Tensor) -> Tensor:
        """The full codes ``[batch, d_sae]`` from every rank's ``f`` (for evaluation)."""
        return self.gather_blocks(f, 1)

    def gather_sae(self) -> TopKSAE:
        """The whole SAE as one ordinary ``TopKSAE`` (every rank gets it; a collective).

        Save it with ``saelib.io``, evaluate it, load it anywhere: it is the SAE these
        blocks are (for a SAE too wide for one device, ``load_sharded_sae`` reads the
        checkpoint instead, on a host with the memory).
        """
        blocks = {n: self.gather_blocks(getattr(self, n), d) for n, d in LATENT_DIMS.items()}
        return assemble(self.cfg, {**blocks, "b_dec": self.b_dec.detach()})


def assemble(cfg: SAEConfig, blocks: dict[str, Tensor]) -> TopKSAE:
    """A ``TopKSAE`` of ``cfg`` holding the whole parameters ``blocks`` (``W_enc [d_in,
    d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``), in their dtype."""
    sae = make_sae(cfg).to(blocks["W_dec"].dtype)
    sae.load_state_dict({name: t.cpu() for name, t in blocks.items()})
    return sae
