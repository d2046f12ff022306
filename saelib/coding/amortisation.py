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
JumpReLU, MLP, ...; not tied, whose encoder is the decoder). The decoder is set in place
(:func:`set_dictionary_`) and frozen for the fit (:func:`encoder_training`, which
``saelib.toys.true_solution`` also uses with the Trainer), so the SAE afterwards decodes with
the true dictionary. The FLOPs of a fit are ``saelib.coding.cost.encoder_fit_flops``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from saelib.progress import progress_bar
from saelib.saes import inference, module_mode
from saelib.saes.config import AFFINE_ENCODERS
from saelib.validation import check_choice, check_int, check_real, is_int, require

Setting = Literal["known_dictionary", "known_codes"]
SETTINGS: tuple[str, ...] = get_args(Setting)
CODE_REGRESSION_ARCHITECTURES = (*AFFINE_ENCODERS, "mlp", "lista")
"""Architectures whose codes are a function of the pre-activations alone (not Gated)."""

__all__ = [
    "CODE_REGRESSION_ARCHITECTURES",
    "SETTINGS",
    "EncoderFitConfig",
    "code_regression_loss",
    "encoder_training",
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
        check_choice(name + "setting", self.setting, SETTINGS)
        check_int(name + "n_steps", self.n_steps, 1)
        check_int(name + "batch_size", self.batch_size, 1)
        check_real(name + "lr", self.lr, 0, open_low=True)
        check_real(name + "sparsity_coeff", self.sparsity_coeff, 0)
        require(
            self.sparsity_coeff == 0 or self.setting == "known_dictionary",
            name + "sparsity_coeff",
            self.sparsity_coeff,
            "0 with setting='known_codes' (the loss is the code regression alone)",
        )
        check_int(name + "seed", self.seed, 0)


def code_regression_loss(pre_acts: Tensor, codes: Tensor) -> Tensor:
    """``mean_b sum_i`` of ``(p - s)^2`` where ``s > 0``, ``relu(p)^2`` where ``s = 0``.

    ``pre_acts, codes [batch, d_sae]``, codes non-negative. Zero iff ``relu(pre_acts) ==
    codes``; unlike ``||relu(p) - s||^2`` it has a gradient where ``p < 0 < s``.
    """
    active = codes > 0
    err = torch.where(active, pre_acts - codes, pre_acts.clamp_min(0))
    return err.pow(2).sum(-1).mean()


def set_dictionary_(sae, dictionary: Tensor, bias: Tensor | None = None) -> None:
    """Copy ``dictionary [d_sae, d_in]`` into ``sae.W_dec`` and ``bias [d_in]`` (default 0)
    into ``sae.b_dec``, in place and without gradient tracking; then ``sae.dictionary_set_()``
    re-derives what the SAE initialised from its old decoder (LISTA's ISTA steps)."""
    shape = tuple(sae.W_dec.shape)
    shown = dictionary.shape if isinstance(dictionary, Tensor) else type(dictionary).__name__
    ok = isinstance(dictionary, Tensor) and tuple(dictionary.shape) == shape
    require(ok, "dictionary", shown, f"a tensor of shape {list(shape)} [d_sae, d_in]")
    if bias is None:
        bias = torch.zeros_like(sae.b_dec)
    ok = isinstance(bias, Tensor) and bias.shape == sae.b_dec.shape
    shown = bias.shape if isinstance(bias, Tensor) else type(bias).__name__
    require(ok, "bias", shown, f"None or a tensor of shape {list(sae.b_dec.shape)}")
    with torch.no_grad():
        sae.W_dec.copy_(dictionary)
        sae.b_dec.copy_(bias)
    sae.dictionary_set_()


@contextmanager
def encoder_training(sae, *, train_b_dec: bool = False) -> Iterator:
    """Train only the encoder in the block: ``W_dec`` (and ``b_dec`` unless ``train_b_dec``)
    frozen, the SAE in training mode; both restored afterwards, even on an error.

    An optimiser built in the block from the parameters that require gradients (or Adam, which
    skips parameters without a gradient) leaves the frozen ones untouched. A tied SAE is
    refused: its encoder is the decoder, so it would be frozen too.
    """
    require(not sae.cfg.tied, "sae.cfg.tied", True, "False (a tied encoder is the decoder)")
    frozen = [sae.W_dec] if train_b_dec else [sae.W_dec, sae.b_dec]
    before = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with module_mode(sae, True):
            yield sae
    finally:
        for p, grad in zip(frozen, before, strict=True):
            p.requires_grad_(grad)


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
    sae : a saelib SAE (not tied), trained in place; its training mode is restored at the end.
    x : Tensor [n, d_in], the training inputs.
    dictionary : Tensor [d_sae, d_in], the true atoms; copied into ``W_dec`` (``b_dec = 0``),
        both frozen during the fit.
    cfg : EncoderFitConfig.
    codes : Tensor [n, d_sae], the true codes of ``x``; required by ``known_codes``.
    callback : called as ``callback(step, sae)`` after every step (``step`` counts from 1),
        in eval mode and without gradients, e.g. to measure the encoder along training.

    Returns
    -------
    Tensor [n_steps], the loss at each step (one host sync, at the end).
    """
    _check_fit(sae, x, cfg, codes)
    with encoder_training(sae):
        set_dictionary_(sae, dictionary)
        return _adam_steps(sae, x, cfg, codes, callback)


def _check_fit(sae, x: Tensor, cfg: EncoderFitConfig, codes: Tensor | None) -> None:
    require(isinstance(cfg, EncoderFitConfig), "cfg", type(cfg).__name__, "an EncoderFitConfig")
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    shown = x.shape if isinstance(x, Tensor) else type(x).__name__
    ok = isinstance(x, Tensor) and x.ndim == 2 and x.shape[1] == d_in
    require(ok, "x", shown, f"a tensor of shape [n, d_in={d_in}]")
    supervised = cfg.setting == "known_codes"
    if supervised:
        allowed = f"one of {list(CODE_REGRESSION_ARCHITECTURES)} with setting='known_codes'"
        architecture = sae.cfg.architecture
        require(
            architecture in CODE_REGRESSION_ARCHITECTURES, "architecture", architecture, allowed
        )
    given = "given" if codes is not None else None
    require(
        supervised == (codes is not None),
        "codes",
        given,
        "given with setting='known_codes' and only then",
    )
    if supervised:
        ok = isinstance(codes, Tensor) and codes.shape == (len(x), d_sae)
        shown = codes.shape if isinstance(codes, Tensor) else type(codes).__name__
        require(ok, "codes", shown, f"a tensor of shape [n={len(x)}, d_sae={d_sae}]")


def _adam_steps(sae, x: Tensor, cfg: EncoderFitConfig, codes: Tensor | None, callback) -> Tensor:
    """``cfg.n_steps`` Adam steps on the parameters that require gradients; the losses."""
    params = [p for p in sae.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=cfg.lr)
    draws = torch.Generator().manual_seed(cfg.seed)
    losses = torch.empty(cfg.n_steps, device=x.device)
    for step in progress_bar(cfg.progress, range(cfg.n_steps), desc=cfg.setting):
        rows = torch.randint(len(x), (cfg.batch_size,), generator=draws).to(x.device)
        if codes is not None:  # encoder only: no decode
            loss = code_regression_loss(sae.pre_activations(x[rows]), codes[rows])
        else:  # the SAE's own objective (with Gated's auxiliary term, JumpReLU's L0, ...)
            loss = sae.loss(x[rows], cfg.sparsity_coeff).total
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses[step] = loss.detach()
        if callback is not None:
            with inference(sae), torch.no_grad():
                callback(step + 1, sae)
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
    require(all(is_int(s) and s >= 1 for s in at), "at_steps", at, "integers >= 1")
    return _snapshots(iter(batches), at, fn)


def _snapshots(stream: Iterator[Tensor], at: list[int], fn) -> Iterator[Tensor]:
    for handed_out, batch in enumerate(stream):
        if handed_out in at:
            with torch.no_grad():
                fn(handed_out)
        yield batch
