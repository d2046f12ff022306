"""What every SAE shares: the decoder, the outputs and the loss contract (config: ``config``).

An SAE maps activations ``x [batch, d_in]`` to codes ``f [batch, d_sae]`` and back:

    f     = act(encoder(x - b_dec))         # encode
    x_hat = f @ W_dec + b_dec               # decode; W_dec [d_sae, d_in], atoms as rows

Subclasses implement ``_encode`` (codes and pre-activations) and ``sparsity`` (the
penalty the trainer scales by its coefficient); decoding is the same for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from saelib import losses
from saelib.saes.config import SAEConfig
from saelib.saes.sparse import SparseCodes, autocast_dtype

_INIT_SALT = 0x5AE_0000  # separates SAE initialisation from data generation seeds


class SAEOutput(NamedTuple):
    x_hat: Tensor  # [batch, d_in]
    f: Tensor | None  # [batch, d_sae] codes; None from the sparse training path (see codes)
    pre_acts: Tensor  # [batch, d_sae] encoder output before the sparsifying nonlinearity
    codes: SparseCodes | None = None  # the active entries, from the sparse path only

    def fired(self) -> Tensor:
        """``[d_sae]`` bool: which latents fired on any row of the batch."""
        # max over the batch > 0: one read of f, no [batch, d_sae] mask
        return self.f.amax(0) > 0 if self.codes is None else self.codes.fired()

    def l0(self) -> Tensor:
        """Scalar: mean number of active latents per row."""
        return (self.f > 0).sum(-1).float().mean() if self.codes is None else self.codes.l0()


@contextmanager
def module_mode(module: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Run the block with ``module`` in training (True) or eval mode, then restore its mode,
    even on an error."""
    was_training = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(was_training)


def inference(module: nn.Module):
    """``module_mode(module, False)``: eval mode for the block, the previous mode restored.

    Eval mode matters: a BatchTopK SAE codes with its learned threshold there.
    """
    return module_mode(module, False)


class LossOutput(NamedTuple):
    total: Tensor  # scalar: mse + sparsity_coeff * sparsity (+ architecture terms)
    terms: dict[str, Tensor]  # unscaled named terms, for logging and plots
    output: SAEOutput


class SAE(nn.Module):
    """Base class: owns the decoder; subclasses own the encoder and the sparsity term."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        # Salted: with the bare seed, an SAE with seed s would start exactly at a
        # dictionary that saelib.toys.synthetic drew with seed s (both normalise randn rows).
        self._generator = torch.Generator().manual_seed(_INIT_SALT + cfg.seed)
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=self._generator)
        self.W_dec = nn.Parameter(W_dec / W_dec.norm(dim=-1, keepdim=True))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    # -- initialisation helpers -------------------------------------------------
    def _init_linear(self, fan_in: int, shape: tuple[int, ...]) -> nn.Parameter:
        bound = 1.0 / math.sqrt(fan_in)  # kaiming-uniform scale, as nn.Linear
        w = torch.rand(*shape, generator=self._generator) * 2 * bound - bound
        return nn.Parameter(w)

    # -- the contract -----------------------------------------------------------
    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(f, pre_acts)``, both ``[batch, d_sae]``."""
        raise NotImplementedError

    def sparsity(self, out: SAEOutput) -> Tensor:
        """Scalar sparsity penalty (before the trainer's coefficient)."""
        raise NotImplementedError

    def encoder_input(self, x: Tensor) -> Tensor:
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_activations(self, x: Tensor) -> Tensor:
        """The encoder's output before the sparsifying nonlinearity, ``[batch, d_sae]``."""
        return self._encode(x)[1]

    def encode(self, x: Tensor) -> Tensor:
        """Codes ``f [batch, d_sae]`` of activations ``x [batch, d_in]``."""
        return self._encode(x)[0]

    def decode(self, f: Tensor) -> Tensor:
        """Reconstruction ``x_hat [batch, d_in] = f @ W_dec + b_dec``."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> SAEOutput:
        f, pre_acts = self._encode(x)
        return SAEOutput(self.decode(f), f, pre_acts)

    def loss(self, x: Tensor, sparsity_coeff: float = 0.0) -> LossOutput:
        """Training loss ``mse + sparsity_coeff * sparsity`` with its named terms."""
        out = self(x)
        terms = {"mse": losses.mse(x, out.x_hat), "sparsity": self.sparsity(out)}
        total = terms["mse"] + sparsity_coeff * terms["sparsity"]
        return LossOutput(total, terms, out)

    def training_loss(
        self, x: Tensor, sparsity_coeff: float = 0.0, *, sparse: bool = True, workspace=None
    ) -> LossOutput:
        """The loss the trainer steps on: ``loss``, or an equal one on a faster path.

        ``sparse=True`` lets an architecture with a sparse training path (TopK, BatchTopK)
        use it in training mode; its ``output.f`` is then None and ``output.codes`` holds
        the active entries. Values and gradients equal ``loss``'s. ``workspace`` (a
        ``saelib.saes.sparse.Workspace``) lets that path reuse its buffers across steps.
        """
        return self.loss(x, sparsity_coeff)

    def aux_k_loss(
        self, x: Tensor, residual: Tensor, out: SAEOutput, dead: Tensor, k_aux: int
    ) -> Tensor:
        """Aux-k (Gao et al. 2024): the ``k_aux`` largest dead latents reconstruct ``residual``.

        ``x [batch, d_in]`` the SAE input, ``residual = (x - x_hat).detach()``, ``out`` the
        step's output, ``dead [d_sae]`` bool. See ``losses.aux_k``.
        """
        return losses.aux_k(residual, out.pre_acts, dead, self.W_dec, k_aux)

    @property
    def needs_unit_decoder(self) -> bool:
        """True when the penalty ignores the decoder's norms (plain L1 on the codes).

        Such an SAE must train with the unit-norm decoder: a free decoder would grow and
        the codes shrink, and the penalty would vanish without any sparsity. Default False.
        """
        return False

    def init_encoder_from_decoder_(self) -> None:
        """Set the encoder to the decoder's transpose where the shapes allow; here, nothing."""

    def dictionary_set_(self) -> None:
        """Hook for code that replaces the decoder (``coding.amortisation.set_dictionary_``):
        re-derive what was initialised from the old decoder, other than the encoder (LISTA's
        ISTA steps); here, nothing."""

    @torch.no_grad()
    def update_statistics(self, out: SAEOutput) -> None:
        """Hook the trainer calls after each step (running estimates); default: nothing."""

    # -- decoder geometry -------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale decoder rows to unit norm in place."""
        norm = torch.linalg.vector_norm(self.W_dec, dim=-1, keepdim=True)
        self.W_dec.div_(norm.clamp_min_(1e-12))

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove from ``W_dec.grad`` its component along each (unit) atom.

        With unit-norm atoms, the parallel component only changes norms, which the
        renormalisation after the step would undo; removing it keeps Adam's moment
        estimates about directions only (Bricken et al. 2023; sparsify does the same).
        """
        grad, W = self.W_dec.grad, self.W_dec
        if grad is None:
            return
        # grad -= <grad, a> a with a = W / ||W||, i.e. grad -= (<grad, W> / ||W||^2) W
        sq_norm = torch.linalg.vector_norm(W, dim=-1, keepdim=True).square_().clamp_min_(1e-24)
        coef = torch.linalg.vecdot(grad, W, dim=-1).unsqueeze(-1).div_(sq_norm)  # [d_sae, 1]
        grad.addcmul_(coef, W, value=-1.0)

    def extra_repr(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.uses_k else ""
        return f"{c.architecture}: d_in={c.d_in}, d_sae={c.d_sae}{k}, tied={c.tied}"


class LinearEncoderSAE(SAE):
    """An SAE whose encoder is one affine map: ``pre_acts = (x - b_dec) @ W_enc + b_enc``."""

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        if not cfg.tied:
            self.register_parameter("W_enc", self._init_linear(cfg.d_in, (cfg.d_in, cfg.d_sae)))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))

    @property
    def W_enc(self) -> Tensor:
        """Encoder weight ``[d_in, d_sae]`` (the decoder's transpose when tied)."""
        if self.cfg.tied:
            return self.W_dec.T
        try:  # registered as a parameter, so it is saved as "W_enc" in state_dict
            return self._parameters["W_enc"]
        except KeyError:
            raise AttributeError("W_enc") from None

    def linear_pre_acts(self, x: Tensor) -> Tensor:
        """``pre = (x - b_dec) @ W_enc + b_enc``, ``[batch, d_sae]``."""
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        return _Affine.apply(x, b_dec, self.W_enc, self.b_enc)

    @torch.no_grad()
    def init_encoder_from_decoder_(self) -> None:
        """Set ``W_enc = W_dec.T`` (Gao et al. 2024; Anthropic April 2024 update)."""
        if not self.cfg.tied:
            self.W_enc.copy_(self.W_dec.T)


class _Affine(torch.autograd.Function):
    """``(x - b_dec) @ W_enc + b_enc`` whose backward skips ``dL/dx`` when x needs none.

    Autograd's own backward of ``(x - b_dec) @ W_enc`` computes the full input gradient
    ``G @ W_enc.T`` (``2 batch d_in d_sae`` FLOP) only to sum it into ``b_dec``'s;
    ``-W_enc @ G.sum(0)`` gives the same for ``d_in d_sae``. Same forward values. Under
    ``torch.autocast`` the product and its backward run in the autocast dtype, as
    autocast's own ``addmm`` would (the gradients reach the fp32 weights as fp32).
    """

    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc):
        x_in = x if b_dec is None else x - b_dec
        low = autocast_dtype(x.device)
        if low is not None:
            x_in, W_enc, b_enc = x_in.to(low), W_enc.to(low), b_enc.to(low)
        ctx.save_for_backward(x_in, W_enc)
        return torch.addmm(b_enc, x_in, W_enc)

    @staticmethod
    def backward(ctx, g):
        x_in, W_enc = ctx.saved_tensors
        need_x, need_b_dec, need_W, need_b = ctx.needs_input_grad[-4:]
        grad_x = grad_b_dec = grad_W = grad_b = None
        if need_W:
            grad_W = x_in.T @ g  # [d_in, d_sae]
        col_sum = g.sum(0) if (need_b or need_b_dec) else None
        if need_b:
            grad_b = col_sum
        if need_x:
            grad_x = g @ W_enc.T
        if need_b_dec:
            grad_b_dec = -(W_enc @ col_sum)
        return grad_x, grad_b_dec, grad_W, grad_b


def penalty(
    name: str, f: Tensor, W_dec: Tensor, tanh_scale: float, nonnegative: bool = False
) -> Tensor:
    """The L1-family sparsity penalty named by ``SAEConfig.sparsity_penalty``.

    ``nonnegative``: f >= 0 by construction (ReLU), so |f| = f and the L1 terms are plain
    sums, whose backward is a broadcast instead of two passes over ``[batch, d_sae]``.
    """
    if nonnegative and name in ("l1", "l1_dec_norm"):
        per_latent = f.sum(0)  # [d_sae]
        weights = W_dec.norm(dim=-1) if name == "l1_dec_norm" else None
        total = per_latent.sum() if weights is None else per_latent @ weights
        return total / f.shape[0]
    if name == "l1":
        return losses.l1(f)
    if name == "l1_dec_norm":
        return losses.decoder_weighted_l1(f, W_dec)
    return losses.tanh_penalty(f, W_dec, tanh_scale)
