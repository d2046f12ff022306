"""Encoders trained against a known dictionary or known codes: the amortisation-gap settings.

O'Neill, Gumran & Klindt ("Compute optimal inference and provable amortisation gap in
sparse autoencoders", 2024) split an SAE's error on synthetic data ``x = s @ D`` into
dictionary error and inference error with three settings:

- ``known_dictionary`` (a): the decoder is the true ``D`` (and ``b_dec = 0``), frozen; only
  the encoder learns, by the SAE's own loss (``sae.loss``: for ReLU ``mean_b ||x - f D||^2 +
  coeff * mean_b ||f||_1``, the decoder having unit-norm rows). What remains is inference
  error: the solver on the same ``D`` is the oracle.
- ``known_codes`` (b): the encoder regresses the true codes ``s >= 0`` (supervised). This is
  the best the encoder family reaches with perfect supervision. The loss is
  ``mean_b sum_i l(p_i, s_i)`` on the pre-activations ``p``: ``(p_i - s_i)^2`` where
  ``s_i > 0`` and ``relu(p_i)^2`` where ``s_i = 0``. It is zero exactly when ``relu(p) = s``,
  like ``||relu(p) - s||^2``, but a latent whose pre-activation is negative on every input
  still gets a gradient towards the codes it should match: with ``||f - s||^2`` such
  latents die for good (6 of 16 MLP outputs did in our trials).
- both unknown (c): ordinary SAE training, ``saelib.training``.

:func:`fit_encoder` runs (a) and (b) for any saelib SAE with its own encoder (ReLU, TopK,
JumpReLU, MLP, ...; not tied, whose encoder is the decoder). The decoder is set in place and
frozen, so the SAE afterwards decodes with the true dictionary. The FLOPs of a fit are
``saelib.flops.encoder_fit_flops``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from saelib.progress import progress_bar
from saelib.validation import is_int, is_positive, is_real, require

Setting = Literal["known_dictionary", "known_codes"]
SETTINGS: tuple[str, ...] = get_args(Setting)
CODE_REGRESSION_ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "mlp")

__all__ = [
    "SETTINGS",
    "EncoderFitConfig",
    "code_regression_loss",
    "fit_encoder",
    "set_dictionary_",
    "snapshots",
]


@dataclass(frozen=True)
class EncoderFitConfig:
    """Settings of :func:`fit_encoder`, validated at construction."""

    setting: Setting = "known_dictionary"
    """``known_dictionary`` (reconstruct through the frozen true dictionary) or
    ``known_codes`` (regress the true codes)."""
    n_steps: int = 2000
    """Adam steps, >= 1."""
    batch_size: int = 256
    """Samples per step, drawn with replacement from ``x``, >= 1."""
    lr: float = 1e-3
    """Adam learning rate, > 0."""
    sparsity_coeff: float = 0.0
    """The SAE's sparsity coefficient (``sae.loss``), >= 0 (``known_dictionary`` only; TopK
    needs none)."""
    seed: int = 0
    """Seeds the batch draws."""
    progress: bool = False
    """Show a progress bar."""

    def __post_init__(self) -> None:
        name = "EncoderFitConfig."
        require(self.setting in SETTINGS, name + "setting", self.setting, f"one of {SETTINGS}")
        for field in ("n_steps", "batch_size"):
            value = getattr(self, field)
            require(is_int(value) and value >= 1, name + field, value, "an int >= 1")
        require(is_positive(self.lr), name + "lr", self.lr, "a finite number > 0")
        coeff = self.sparsity_coeff
        require(is_real(coeff) and coeff >= 0, name + "sparsity_coeff", coeff, "a number >= 0")
        require(
            coeff == 0 or self.setting == "known_dictionary",
            name + "sparsity_coeff",
            coeff,
            "0 with setting='known_codes' (the loss is the code regression alone)",
        )
        require(is_int(self.seed) and self.seed >= 0, name + "seed", self.seed, "an int >= 0")


def code_regression_loss(pre_acts: Tensor, codes: Tensor) -> Tensor:
    """``mean_b sum_i`` of ``(p - s)^2`` where ``s > 0``, ``relu(p)^2`` where ``s = 0``.

    ``pre_acts, codes [batch, d_sae]``, codes non-negative. Zero iff ``relu(pre_acts) ==
    codes``; unlike ``||relu(p) - s||^2`` it has a gradient where ``p < 0 < s``.
    """
    active = codes > 0
    err = torch.where(active, pre_acts - codes, pre_acts.clamp_min(0))
    return err.pow(2).sum(-1).mean()


def set_dictionary_(sae, dictionary: Tensor, bias: Tensor | None = None) -> None:
    """Copy ``dictionary [d_sae, d_in]`` into ``sae.W_dec`` (and ``bias [d_in]``, default 0,
    into ``b_dec``) and freeze both, so that only the encoder's parameters still train."""
    if getattr(sae.cfg, "tied", False):
        raise ValueError("sae must not be tied: its encoder is the decoder, so it cannot be fitted")
    shape = tuple(sae.W_dec.shape)
    if not isinstance(dictionary, Tensor) or tuple(dictionary.shape) != shape:
        got = tuple(dictionary.shape) if isinstance(dictionary, Tensor) else type(dictionary)
        raise ValueError(f"dictionary must be a tensor of shape {shape} [d_sae, d_in], got {got}")
    if bias is None:
        bias = torch.zeros_like(sae.b_dec)
    if not isinstance(bias, Tensor) or bias.shape != sae.b_dec.shape:
        raise ValueError(f"bias must be a tensor of shape {tuple(sae.b_dec.shape)} or None")
    with torch.no_grad():
        sae.W_dec.copy_(dictionary)
        sae.b_dec.copy_(bias)
    sae.W_dec.requires_grad_(False)
    sae.b_dec.requires_grad_(False)


def fit_encoder(
    sae,
    x: Tensor,
    dictionary: Tensor,
    cfg: EncoderFitConfig,
    codes: Tensor | None = None,
    callback: Callable[[int, object], None] | None = None,
) -> Tensor:
    """Train ``sae``'s encoder with the decoder fixed to ``dictionary``.

    Parameters
    ----------
    sae : a saelib SAE (not tied), trained in place.
    x : Tensor [n, d_in], the training inputs.
    dictionary : Tensor [d_sae, d_in], the true atoms; copied into ``W_dec`` and frozen.
    cfg : EncoderFitConfig.
    codes : Tensor [n, d_sae], the true codes of ``x``; required by ``known_codes``.
    callback : called as ``callback(step, sae)`` after every step (``step`` counts from 1),
        in eval mode and without gradients, e.g. to measure the encoder along training.

    Returns
    -------
    Tensor [n_steps], the loss at each step (one host sync, at the end).
    """
    if not isinstance(cfg, EncoderFitConfig):
        raise ValueError(f"cfg must be an EncoderFitConfig, got {type(cfg).__name__}")
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != sae.cfg.d_in:
        raise ValueError(f"x must be a tensor of shape [n, d_in={sae.cfg.d_in}]")
    supervised = cfg.setting == "known_codes"
    if supervised and sae.cfg.architecture not in CODE_REGRESSION_ARCHITECTURES:
        raise ValueError(
            f"setting='known_codes' needs codes that are a function of the pre-activations "
            f"alone: architecture must be one of {CODE_REGRESSION_ARCHITECTURES}, got "
            f"{sae.cfg.architecture!r} (Gated codes also depend on the magnitude path)"
        )
    if supervised != (codes is not None):
        raise ValueError("codes must be given with setting='known_codes' and only then")
    if supervised and (not isinstance(codes, Tensor) or codes.shape != (len(x), sae.cfg.d_sae)):
        raise ValueError(f"codes must be a tensor of shape [n={len(x)}, d_sae={sae.cfg.d_sae}]")
    set_dictionary_(sae, dictionary)
    params = [p for p in sae.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=cfg.lr)
    draws = torch.Generator().manual_seed(cfg.seed)
    losses = torch.empty(cfg.n_steps, device=x.device)
    sae.train()
    for step in progress_bar(cfg.progress, range(cfg.n_steps), desc=cfg.setting):
        rows = torch.randint(len(x), (cfg.batch_size,), generator=draws).to(x.device)
        if supervised:  # encoder only: no decode (saelib-internal _encode gives pre_acts)
            loss = code_regression_loss(sae._encode(x[rows])[1], codes[rows])
        else:  # the SAE's own objective (with Gated's auxiliary term, JumpReLU's L0, ...)
            loss = sae.loss(x[rows], cfg.sparsity_coeff).total
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses[step] = loss.detach()
        if callback is not None:
            sae.eval()
            with torch.no_grad():
                callback(step + 1, sae)
            sae.train()
    sae.eval()
    return losses.cpu()


def snapshots(batches: Iterable[Tensor], at_steps: Iterable[int], fn: Callable[[int], None]):
    """Yield from ``batches``, calling ``fn(step)`` just before batch ``step`` is handed out.

    A trainer that takes one batch per step has then completed exactly ``step`` steps, so
    ``Trainer(sae, cfg).fit(snapshots(batches, [100, 1000], measure))`` measures the SAE
    along one run; ``fn`` runs under ``torch.no_grad()``. Steps must be >= 1 (the trainer
    draws the first batch before step 0 to initialise). ``fn(n_steps)`` is not called by
    this wrapper: measure the end of training after ``fit`` returns.
    """
    at = sorted(set(at_steps))
    if any(not is_int(s) or s < 1 for s in at):
        raise ValueError(f"at_steps must be ints >= 1, got {at}")
    return _snapshots(iter(batches), at, fn)


def _snapshots(stream: Iterator[Tensor], at: list[int], fn) -> Iterator[Tensor]:
    for handed_out, batch in enumerate(stream):
        if handed_out in at:
            with torch.no_grad():
                fn(handed_out)
        yield batch
