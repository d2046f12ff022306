"""Downstream loss of an SAE: splice its reconstruction into the model and measure next-token loss.

    losses = spliced_losses(lm, tokens, "blocks.6.hook_resid_post", sae_reconstruction(sae))
    losses["delta_loss"], losses["ce_loss_recovered"]

At the hook, the activation ``x [batch, seq, d_model]`` is replaced by ``x_hat`` (from
position ``skip_first`` on) and the forward continues. Three losses over the same tokens:
clean (no change), spliced, and ablated (the activation set to zero, or to its mean), give

    delta_loss        = L_spliced - L_clean
    ce_loss_recovered = (L_ablated - L_spliced) / (L_ablated - L_clean)

(1 for a perfect reconstruction, 0 for one as bad as the ablation; see
:func:`saelib.metrics.ce_loss_recovered`). The loss is the mean next-token cross-entropy
over every predicted position (``n_seq * (n_ctx - 1)`` of them), summed in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from saelib import metrics
from saelib.claims import interval
from saelib.lm.model import LanguageModel
from saelib.saes import inference
from saelib.validation import check_choice, check_int, require

Reconstruct = Callable[[Tensor], Tensor]  # x [n, d_model] -> x_hat [n, d_model]
Ablation = Literal["zero", "mean"]
ABLATIONS = get_args(Ablation)


def sae_reconstruction(sae) -> Reconstruct:
    """``x -> sae(x).x_hat`` in inference mode, on the SAE's device and dtype."""
    param = next(sae.parameters())

    @torch.no_grad()
    def reconstruct(x: Tensor) -> Tensor:
        with inference(sae):
            x_hat = sae(x.to(param.device, param.dtype)).x_hat
        return x_hat.to(x.device, x.dtype)

    return reconstruct


@torch.no_grad()
def sequence_losses(
    lm: LanguageModel,
    tokens: Tensor,
    hook: str | None = None,
    reconstruct: Reconstruct | None = None,
    *,
    skip_first: int = 0,
    batch_size: int = 8,
) -> Tensor:
    """Mean next-token cross-entropy of each sequence of ``tokens [n_seq, n_ctx]``: ``[n_seq]``.

    With ``hook`` and ``reconstruct``, the activation at ``hook`` (positions
    ``skip_first:`` of every sequence, flattened to ``[n, d_model]``) is replaced by
    ``reconstruct(x)`` before the forward continues. Each entry averages the ``n_ctx - 1``
    predicted positions of its sequence, in float64: the units of a paired interval over
    sequences (:func:`paired_delta`).
    """
    if (hook is None) != (reconstruct is None):
        raise ValueError("hook and reconstruct must be given together (or neither)")
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must have shape [n_seq, n_ctx >= 2], got {list(tokens.shape)}")
    check_int("batch_size", batch_size, low=1)
    if hook is not None:
        require(hook in lm.bridge.hook_dict, "hook", hook, f"a hook of {lm.name}")

    def splice(act: Tensor, hook) -> Tensor:  # act [batch, seq, d_model]
        tail = act[:, skip_first:]
        x_hat = reconstruct(tail.reshape(-1, act.shape[-1])).reshape(tail.shape)
        return torch.cat([act[:, :skip_first], x_hat.to(act.dtype)], dim=1)

    hooks = [] if hook is None else [(hook, splice)]
    losses = []
    for seqs in tokens.split(batch_size):
        seqs = seqs.to(lm.device)
        logits = lm.bridge.run_with_hooks(seqs, return_type="logits", fwd_hooks=hooks)
        loss = F.cross_entropy(
            logits[:, :-1].transpose(1, 2).float(), seqs[:, 1:], reduction="none"
        )  # [batch, n_ctx - 1]
        losses.append(loss.double().mean(dim=1).cpu())
    return torch.cat(losses)


def next_token_loss(
    lm: LanguageModel, tokens: Tensor, hook: str | None = None, reconstruct=None, **kw
) -> float:
    """Mean next-token cross-entropy on ``tokens [n_seq, n_ctx]``, optionally spliced: the
    mean of :func:`sequence_losses` (same arguments; every sequence has ``n_ctx - 1``
    predicted positions, so this is the mean over all of them)."""
    return sequence_losses(lm, tokens, hook, reconstruct, **kw).mean().item()


def paired_delta(spliced: Tensor, clean: Tensor, confidence: float = 0.95) -> dict[str, float]:
    """Delta loss with a t interval over sequences: ``spliced - clean``, both ``[n_seq]``.

    The sequences are the units (each is scored clean and spliced): returns ``delta_loss``
    (the mean difference), ``delta_low`` and ``delta_high`` (its ``confidence`` Student-t
    interval; NaN for one sequence).
    """
    require(spliced.shape == clean.shape and spliced.dim() == 1, "spliced, clean",
            (tuple(spliced.shape), tuple(clean.shape)), "two [n_seq] tensors")  # fmt: skip
    mean, low, high, _ = interval((spliced - clean).tolist(), confidence)
    return {"delta_loss": mean, "delta_low": low, "delta_high": high}


def constant(value: Tensor) -> Reconstruct:
    """``x -> value`` broadcast to every row: replace the activation by ``value [d_model]``."""
    return lambda y: value.to(y.device, y.dtype).expand_as(y)


def mean_ablation(x: Tensor) -> Reconstruct:
    """Replace the activation by the mean of ``x [n, d_model]`` (:func:`constant`)."""
    return constant(x.double().mean(dim=0).float())


def spliced_losses(
    lm: LanguageModel,
    tokens: Tensor,
    hook: str,
    reconstruct: Reconstruct,
    *,
    ablation: Ablation = "zero",
    mean: Tensor | None = None,
    clean: float | None = None,
    ablated: float | None = None,
    skip_first: int = 0,
    batch_size: int = 8,
) -> dict[str, float]:
    """Clean, spliced and ablated loss, ``delta_loss`` and ``ce_loss_recovered``.

    ``ablation`` is ``zero`` or ``mean`` (then ``mean [d_model]`` is the activation mean).
    Pass ``clean`` and ``ablated`` from an earlier call to skip recomputing them when
    scoring several SAEs at one hook on the same tokens.
    """
    check_choice("ablation", ablation, ABLATIONS)
    if ablation == "mean" and mean is None:
        raise ValueError("ablation='mean' needs mean, the activation mean [d_model]")
    kw = dict(skip_first=skip_first, batch_size=batch_size)
    if clean is None:
        clean = next_token_loss(lm, tokens, **kw)
    if ablated is None:
        ablate = torch.zeros_like if ablation == "zero" else constant(mean)
        ablated = next_token_loss(lm, tokens, hook, ablate, **kw)
    spliced = next_token_loss(lm, tokens, hook, reconstruct, **kw)
    return {
        "clean_loss": clean,
        "spliced_loss": spliced,
        "ablated_loss": ablated,
        "delta_loss": spliced - clean,
        "ce_loss_recovered": metrics.ce_loss_recovered(clean, spliced, ablated),
    }
