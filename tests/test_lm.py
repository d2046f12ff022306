"""Model loading through the TransformerBridge: hook names, tokenisation, residual stream."""

import pytest
import torch

from saelib.lm import model as lm


def test_resid_hook_names():
    assert lm.resid_hook(6) == "blocks.6.hook_resid_post"
    assert lm.resid_hook(0, "pre") == "blocks.0.hook_resid_pre"
    assert lm.hook_layer("blocks.12.hook_resid_mid") == 12


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lm.resid_hook(-1), "layer must be an integer >= 0"),
        (lambda: lm.resid_hook(2, "out"), r"site must be one of \['pre', 'mid', 'post'\]"),
        (lambda: lm.hook_layer("ln_final.hook_out"), "hook must be a block hook name"),
        (lambda: lm.load_model(""), "model_name must be"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SAELIB_CACHE", str(tmp_path / "c"))
    assert lm.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_tiny_bridge_matches_hf_hidden_states(tiny_lm, layer):
    model, hf = tiny_lm
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(layer))
    resid = lm.residual_stream(model, tokens, layer)  # [2, 12, 32]
    assert resid.shape == (2, 12, 32)
    torch.testing.assert_close(resid, hf_block_output(hf, tokens, layer), rtol=0, atol=0)


def hf_block_output(hf, tokens, layer):
    """Output of decoder layer ``layer`` in plain HF (hidden_states[-1] is after the final norm)."""
    seen = []
    handle = hf.model.layers[layer].register_forward_hook(
        lambda mod, args, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        with torch.no_grad():
            hf(tokens)
    finally:
        handle.remove()
    return seen[0]


def test_tiny_tokenize_has_no_bos_for_llama(tiny_lm):
    model, _ = tiny_lm
    ids = model.tokenize(["the cat sat", "a dog"])
    assert not model.prepend_bos
    assert [len(r) for r in ids] == [3, 2]
    assert model.tokenizer.bos_token_id not in ids[0]


@pytest.fixture(scope="module")
def smollm2():
    """The offline default model (dequantised into the cache on first use, ~1 min)."""
    torch.set_num_threads(1)
    return lm.load_model(lm.SMOLLM2)


def test_smollm2_loads_offline_and_matches_hf(smollm2):
    assert (smollm2.n_layers, smollm2.d_model) == (30, 576)
    ids = smollm2.tokenize(["The quick brown fox jumps over the lazy dog."])
    assert ids[0][0] != smollm2.tokenizer.bos_token_id  # SmolLM2 takes no BOS
    tokens = torch.tensor(ids)
    hf, _ = lm.load_hf(lm.SMOLLM2)
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states  # embeddings first
    for layer in (0, 5, 29):
        reference = hf_block_output(hf, tokens, layer)
        if layer < 29:
            torch.testing.assert_close(reference, hidden[layer + 1], rtol=0, atol=0)
        torch.testing.assert_close(
            lm.residual_stream(smollm2, tokens, layer), reference, rtol=0, atol=0
        )
    # a real model: the next-token loss on plain English is far below uniform, log(49152)
    loss = smollm2.bridge(tokens, return_type="loss").item()
    assert loss < 0.6 * torch.log(torch.tensor(49152.0)).item()
