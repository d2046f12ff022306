"""The residual stream from the Hugging Face model's own forward, cut after the last block needed.

The bridge's ``run_with_cache(..., stop_at_layer=L + 1)`` and Hugging Face's own forward
over blocks ``0..L`` compute the same numbers (identical bits for SmolLM2, Pythia and
Llama with eager attention, ``tests/test_lm_residual.py``; not for GPT-2, which keeps the
bridge), but the bridge's hook machinery costs about 8% of a harvest at block 6
(``benchmarks/results/harvest_attention.md``). The bridge rewires the modules it wraps,
so the forward here runs on ``LanguageModel.hf_model``, a copy of the module tree made
before wrapping that shares the weights. For residual-stream hooks only, harvests, dashboard
passes and the probes' pooling take this path:

    hidden_states[L]      = blocks.L.hook_resid_pre
    hidden_states[L + 1]  = blocks.L.hook_resid_post

with the model's block list cut to ``0..L_max`` and its final norm replaced by the
identity for the call (Hugging Face applies that norm to the last hidden state), both
restored afterwards. Any other hook, or an architecture whose block list is not known
here, returns None: :func:`residual_activations` then uses the bridge.

    acts = residual_activations(lm, tokens, hooks)   # {hook: [batch, seq, d_model]}, either path
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from saelib.lm.model import LanguageModel, hook_layer

# model_type -> (the base model's attribute on the causal LM, its block list, its final norm).
# Only architectures whose HF forward gives the bridge's bits: GPT-2's does not (the
# bridge computes its attention otherwise; differences in the last bits), so GPT-2
# harvests stay on the bridge and its caches keep the numbers they always had.
_LAYOUTS = {
    "llama": ("model", "layers", "norm"),
    "gpt_neox": ("gpt_neox", "layers", "final_layer_norm"),
}
_SITES = {"hook_resid_pre": 0, "hook_resid_post": 1}  # offset into hidden_states


def hidden_state_index(hook: str) -> int | None:
    """Index into Hugging Face's ``hidden_states`` of a residual hook, else None."""
    site = hook.split(".")[-1]
    return hook_layer(hook) + _SITES[site] if site in _SITES else None


@contextmanager
def _cut(hf_model: nn.Module, n_blocks: int) -> Iterator[nn.Module]:
    """The base model with only its first ``n_blocks`` blocks and no final norm."""
    base_name, blocks_name, norm_name = _LAYOUTS[hf_model.config.model_type]
    base = getattr(hf_model, base_name)
    blocks, norm = getattr(base, blocks_name), getattr(base, norm_name)
    setattr(base, blocks_name, blocks[:n_blocks])
    setattr(base, norm_name, nn.Identity())
    try:
        yield base
    finally:
        setattr(base, blocks_name, blocks)
        setattr(base, norm_name, norm)


def _hook_every_block(hf_model: nn.Module, tokens: Tensor) -> None:
    """Run the whole model once, on one token, before its first cut forward: transformers 5
    installs its hidden-state hooks at a model's first forward, on the blocks it has then,
    so a first forward cut after block 2 would leave the later blocks unrecorded for good."""
    if not getattr(hf_model, "_saelib_hooked", False):
        base = getattr(hf_model, _LAYOUTS[hf_model.config.model_type][0])
        base(tokens[:1, :1], output_hidden_states=True, use_cache=False)
        hf_model._saelib_hooked = True


@torch.no_grad()
def residual_forward(lm: LanguageModel, tokens: Tensor, hooks: list[str]) -> dict | None:
    """``{hook: [batch, seq, d_model]}`` for residual-stream ``hooks`` of ``tokens
    [batch, seq]``, from the model's own forward stopped after the deepest block; None when
    a hook is not ``hook_resid_pre``/``hook_resid_post`` or the architecture is not known."""
    hf_model = lm.hf_model
    indices = [hidden_state_index(h) for h in hooks]
    if hf_model is None or None in indices or hf_model.config.model_type not in _LAYOUTS:
        return None
    n_blocks = max(hook_layer(h) for h in hooks) + 1
    _hook_every_block(hf_model, tokens)
    with _cut(hf_model, n_blocks) as base:
        states = base(tokens, output_hidden_states=True, use_cache=False).hidden_states
    if len(states) != n_blocks + 1:
        raise RuntimeError(
            f"{lm.name}: the forward cut after block {n_blocks - 1} returned {len(states)} "
            f"hidden states, not {n_blocks + 1}; this transformers version records them "
            "otherwise: use the bridge (lm.bridge.run_with_cache) for these hooks"
        )
    return {hook: states[i] for hook, i in zip(hooks, indices, strict=True)}


@torch.no_grad()
def residual_activations(lm: LanguageModel, tokens: Tensor, hooks: list[str]) -> dict:
    """``{hook: [batch, seq, d_model]}`` of ``tokens [batch, seq]`` (on the model's device):
    :func:`residual_forward` where it applies, else the bridge's ``run_with_cache`` stopped
    after the deepest hook's block. The same numbers either way (see the module docstring)."""
    cache = residual_forward(lm, tokens, hooks)
    if cache is None:
        stop = max(hook_layer(h) for h in hooks) + 1
        _, cache = lm.bridge.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop)
    return {hook: cache[hook] for hook in hooks}
