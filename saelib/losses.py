"""Loss terms for training sparse autoencoders: small pure functions.

Conventions: ``x``, ``x_hat`` are ``[batch, d_in]``, codes ``f`` are ``[batch, d_sae]``,
decoders ``W_dec`` are ``[d_sae, d_in]`` with atoms as rows. Every penalty is a sum over
latents averaged over the batch, so coefficients mean the same thing at any batch size.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mse(x: Tensor, x_hat: Tensor) -> Tensor:
    """Squared error summed over ``d_in``, averaged over the batch: ``mean_b ||x - x_hat||^2``."""
    return (x - x_hat).pow(2).sum(-1).mean()


def l1(f: Tensor) -> Tensor:
    """``mean_b sum_i |f_i|``."""
    return f.abs().sum(-1).mean()


def decoder_weighted_l1(f: Tensor, W_dec: Tensor) -> Tensor:
    """``mean_b sum_i |f_i| ||W_dec,i||`` (Anthropic, April 2024 update; SAELens's L1).

    Weighting by the atom norm makes the penalty invariant to moving scale between
    encoder and decoder, so the decoder needs no norm constraint.
    """
    # Summed over the batch first: one pass over f, no [batch, d_sae] product.
    per_latent = f.abs().sum(0) if f.dim() == 2 else f.abs().flatten(0, -2).sum(0)
    return per_latent @ W_dec.norm(dim=-1) / (f.numel() // f.shape[-1])


def tanh_penalty(f: Tensor, W_dec: Tensor, scale: float = 4.0) -> Tensor:
    """``mean_b sum_i tanh(scale * |f_i| ||W_dec,i||)`` (Anthropic, February 2024 update).

    A saturating L1: large activations pay almost no more than moderate ones, which
    reduces shrinkage at the cost of a less convex objective.
    """
    return torch.tanh(scale * f.abs() * W_dec.norm(dim=-1)).sum(-1).mean()


def rectangle(u: Tensor) -> Tensor:
    """Rectangle kernel ``K(u) = 1{-1/2 < u <= 1/2}`` (JumpReLU paper, eq. 11)."""
    return ((u > -0.5) & (u <= 0.5)).to(u.dtype)


class _Step(torch.autograd.Function):
    """Heaviside ``H(z - theta)`` with the straight-through estimator of JumpReLU.

    Rajamanoharan et al. (2024), "Jumping Ahead", eq. 12:
    ``d/dtheta H(z - theta) := -(1/eps) K((z - theta)/eps)``; no gradient to ``z``.
    """

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * rectangle((z - theta) / eps) * grad_out
        return None, _sum_to(grad_theta, theta.shape), None


class _JumpReLU(torch.autograd.Function):
    """``z * H(z - theta)`` with the straight-through estimator of JumpReLU.

    Rajamanoharan et al. (2024), eq. 11: the gradient to ``z`` is ``H(z - theta)``
    (exact almost everywhere) and ``d/dtheta := -(theta/eps) K((z - theta)/eps)``.
    """

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = (z > theta).to(z.dtype) * grad_out
        grad_theta = -(theta / eps) * rectangle((z - theta) / eps) * grad_out
        return grad_z, _sum_to(grad_theta, theta.shape), None


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient ``[batch, d_sae]`` back to a parameter's ``shape``."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    return grad


def step(z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    """Heaviside step ``H(z - theta)`` with the rectangle-kernel STE for ``theta``."""
    return _Step.apply(z, theta, bandwidth)


def jumprelu(z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    """JumpReLU ``z * H(z - theta)`` with the rectangle-kernel STE for ``theta``."""
    return _JumpReLU.apply(z, theta, bandwidth)


def l0_ste(z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    """``mean_b sum_i H(z_i - theta_i)``: the L0 norm, differentiable in ``theta``."""
    return step(z, theta, bandwidth).sum(-1).mean()


def aux_k(residual: Tensor, pre_acts: Tensor, dead: Tensor, W_dec: Tensor, k_aux: int) -> Tensor:
    """Aux-k loss on dead latents (Gao et al. 2024, appendix A.2).

    Reconstruct the main reconstruction's error ``residual = x - x_hat`` (``[batch, d_in]``,
    detached by the caller) from the ``k_aux`` largest pre-activations among ``dead``
    latents (bool ``[d_sae]``): ``mean_b ||residual - aux_recon||^2``, in the units of
    ``mse`` so that ``aux_k_coeff`` means the same at any activation scale (Gao et al.
    normalise both terms alike; SAELens uses this unnormalised form). Only dead latents
    receive a gradient. Returns 0 when no latent is dead.
    """
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre_acts.new_zeros(())
    k = min(k_aux, n_dead)
    masked = pre_acts.masked_fill(~dead, float("-inf"))  # live latents can never win
    vals, idx = masked.topk(k, dim=-1, sorted=False)  # [batch, k]
    codes = torch.zeros_like(pre_acts).scatter(-1, idx, vals.relu())
    recon = codes @ W_dec  # decoder without bias; a dense matmul beats a gather on CPU
    return mse(residual, recon)


@torch.no_grad()
def _nearest_neighbours(atoms: Tensor, chunk_size: int) -> Tensor:
    """Index of each unit row's nearest other row by |cos|, in ``[chunk, n]`` blocks."""
    n = atoms.shape[0]
    nn = torch.empty(n, dtype=torch.long, device=atoms.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        nn[start:stop] = _abs_cos_block(atoms, start, stop).argmax(dim=-1)
    return nn


def _abs_cos_block(atoms: Tensor, start: int, stop: int) -> Tensor:
    """``|cos|`` of rows ``start:stop`` against all rows, ``[stop - start, n]``, self at -1."""
    cos = (atoms[start:stop] @ atoms.T).abs_()
    cos[torch.arange(stop - start), torch.arange(start, stop)] = -1.0  # not itself
    return cos


def orthogonality_penalty(W_dec: Tensor, power: float = 1.0, chunk_size: int = 4096) -> Tensor:
    """Mean over atoms of ``|cos(d_i, d_nn(i))| ** power``, nn(i) the nearest other atom.

    Till (2024), "Do sparse autoencoders find true features?": penalising each atom's
    cosine to its nearest neighbour discourages merged (composed) latents; ``power > 1``
    is the superlinear variant that lets small overlaps go almost free.

    Memory stays ``O(chunk_size * d_sae)``: neighbours are found without autograd in
    chunks, then only the ``d_sae`` chosen pairs are recomputed with gradients. The
    gradient equals that of the full max, which is attained at the chosen pair.
    """
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    if W_dec.shape[0] < 2:
        return W_dec.new_zeros(())
    atoms = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    nn = _nearest_neighbours(atoms.detach(), chunk_size)
    cos = (atoms * atoms[nn]).sum(-1).abs()  # [d_sae]
    return cos.pow(power).mean()
