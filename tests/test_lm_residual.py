"""The harvest's fast path (saelib.lm.residual) against the bridge it replaces.

For the architectures it serves (tiny Pythia and Llama folders, and SmolLM2 itself), the
residual stream from the model's own forward, cut after the deepest block, must equal the
bridge's ``run_with_cache`` bit for bit, and the model must come back whole (its blocks
and final norm restored, its full forward unchanged). GPT-2, whose HF forward differs from
the bridge's in the last bits, must not take it.
"""

import pytest
import torch
from conftest import build_tiny_lm

from saelib.lm import activations as acts
from saelib.lm.model import SMOLLM2, load_model, resid_hook
from saelib.lm.residual import hidden_state_index, residual_activations, residual_forward


def bridge_cache(lm, tokens, hooks):
    stop = max(int(h.split(".")[1]) for h in hooks) + 1
    with torch.no_grad():
        return lm.bridge.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop)[1]


@pytest.fixture(scope="module", params=["pythia", "llama"])
def folder_lm(request, tiny_hf_folder, one_thread):
    return load_model(str(tiny_hf_folder(request.param)))


def test_gpt2_keeps_the_bridge(tiny_hf_folder, one_thread):
    lm = load_model(str(tiny_hf_folder("gpt2")))
    tokens = torch.zeros(1, 4, dtype=torch.long)
    assert residual_forward(lm, tokens, [resid_hook(1)]) is None
    # why: its HF forward is not the bridge's to the bit
    with torch.no_grad():
        hf = lm.hf_model(tokens, output_hidden_states=True).hidden_states[2]
    assert not torch.equal(hf, bridge_cache(lm, tokens, [resid_hook(1)])[resid_hook(1)])


def test_hidden_state_index():
    assert hidden_state_index("blocks.0.hook_resid_pre") == 0
    assert hidden_state_index("blocks.4.hook_resid_post") == 5
    assert hidden_state_index("blocks.4.hook_resid_mid") is None
    assert hidden_state_index("blocks.4.hook_mlp_out") is None


def check_same_as_bridge(lm, tokens):
    n = lm.n_layers
    # the deepest post hook is the last hidden state, the one HF would have normed
    hooks = [resid_hook(0, "pre"), resid_hook(n // 2), resid_hook(n - 2, "pre"), resid_hook(n - 2)]
    with torch.no_grad():
        full_before = lm.bridge.original_model(tokens).logits
    fast = residual_forward(lm, tokens, hooks)
    slow = bridge_cache(lm, tokens, hooks)
    for hook in hooks:
        assert torch.equal(fast[hook], slow[hook]), hook
    with torch.no_grad():  # restored: every block and the final norm are back
        assert torch.equal(lm.bridge.original_model(tokens).logits, full_before)


def test_equals_the_bridge_on_folder_models(folder_lm):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, folder_lm.tokenizer.vocab_size, (3, 12), generator=g)
    check_same_as_bridge(folder_lm, tokens)


def test_other_hooks_fall_back_to_the_bridge(folder_lm):
    tokens = torch.zeros(1, 4, dtype=torch.long)
    assert residual_forward(folder_lm, tokens, [resid_hook(0), "blocks.0.hook_mlp_out"]) is None


def test_residual_activations_take_either_path_with_the_bridges_numbers(folder_lm, monkeypatch):
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, folder_lm.tokenizer.vocab_size, (2, 7), generator=g)
    mixed = [resid_hook(1), "blocks.0.hook_mlp_out"]  # the bridge's path
    slow = bridge_cache(folder_lm, tokens, mixed)
    bridged = residual_activations(folder_lm, tokens, mixed)
    with monkeypatch.context() as m:  # residual hooks only: the fast path, no bridge
        m.setattr(folder_lm.bridge, "run_with_cache", lambda *a, **k: pytest.fail("bridge"))
        fast = residual_activations(folder_lm, tokens, [resid_hook(1)])
    for got, hooks in ((fast, [resid_hook(1)]), (bridged, mixed)):
        assert list(got) == hooks
        for hook in hooks:
            assert torch.equal(got[hook], slow[hook]), hook


def test_a_shallow_first_call_does_not_hide_deeper_blocks(tmp_path, one_thread):
    """transformers 5 hooks the blocks a model has at its first forward: a first call cut
    after block 0 must not leave blocks 1 and 2 unrecorded for the calls after it."""
    lm, _ = build_tiny_lm(tmp_path)  # a model no forward has run on yet
    tokens = torch.randint(0, 20, (2, 6), generator=torch.Generator().manual_seed(3))
    hooks = [resid_hook(layer) for layer in range(lm.n_layers)]
    slow = bridge_cache(lm, tokens, hooks)
    for hook in hooks:  # shallowest first
        assert torch.equal(residual_forward(lm, tokens, [hook])[hook], slow[hook]), hook


def test_harvest_with_mixed_hooks_equals_residual_only(folder_lm, tmp_path):
    """A harvest asking for a non-residual hook goes through the bridge; its residual
    shards equal those of a harvest that took the fast path."""
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, folder_lm.tokenizer.vocab_size, (4, 10), generator=g)
    hook = resid_hook(1)
    fast = acts.harvest(
        folder_lm, tokens, [hook], tmp_path / "a", corpus_sha256="t", progress=False
    )
    both = [hook, "blocks.1.hook_mlp_out"]
    slow = acts.harvest(folder_lm, tokens, both, tmp_path / "b", corpus_sha256="t", progress=False)
    assert torch.equal(fast.load(hook), slow.load(hook))


def test_equals_the_bridge_on_smollm2(one_thread):
    lm = load_model(SMOLLM2)
    text = ["The quick brown fox jumps over the lazy dog, and then it ran far away."] * 2
    tokens = torch.tensor([row[:12] for row in lm.tokenize(text)])
    check_same_as_bridge(lm, tokens)
