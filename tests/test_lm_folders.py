"""GPT-2 and Pythia without a hub: tiny random models saved as Hugging Face folders
(tests/tiny_models.py), loaded by ``load_model(folder)`` and checked against plain
Hugging Face forwards of an independent copy of the same folder."""

import importlib.util
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tiny_models import TEXTS, hf_final_norm, hf_loss, save_tiny_model, save_tokenizer

from saelib.lm import activations as acts
from saelib.lm.model import load_hf, load_model, resid_hook, residual_stream, uses_bos
from saelib.lm.splice import next_token_loss, spliced_losses
from saelib.lm.sweep import LMScorer
from saelib.parameters import check_chapter, parse_value
from saelib.saes import SAEConfig, make_sae

ARCHS = ["gpt2", "pythia"]
N_LAYERS, D_MODEL, N_CTX = 3, 64, 12


@pytest.fixture(scope="module", params=ARCHS)
def loaded(request, tiny_hf_folder, one_thread):
    """(arch, LanguageModel, HF model): the bridge and an HF copy it never touched."""
    folder = str(tiny_hf_folder(request.param))
    hf, _ = load_hf(folder)
    return request.param, load_model(folder), hf


@pytest.fixture(scope="module")
def tokens(loaded):
    """[3, N_CTX]: the helper's sentences tokenized by the model's own rule."""
    _, lm, _ = loaded
    ids = lm.tokenize(TEXTS)
    assert min(map(len, ids)) >= N_CTX
    return torch.tensor([row[:N_CTX] for row in ids])


def test_hook_names_are_transformer_lens_ones(loaded, tiny_hf_folder):
    arch, lm, _ = loaded
    assert lm.name == str(tiny_hf_folder(arch).resolve())
    assert (lm.n_layers, lm.d_model) == (N_LAYERS, D_MODEL)
    for layer in range(N_LAYERS):
        for name in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
            assert f"blocks.{layer}.{name}" in lm.bridge.hook_dict
        # Pythia runs attention and MLP in parallel: there is no residual between them
        assert (resid_hook(layer, "mid") in lm.bridge.hook_dict) == (arch == "gpt2")


def test_residual_stream_equals_hf_hidden_states(loaded, tokens):
    _, lm, hf = loaded
    hooks = [resid_hook(layer, site) for layer in range(N_LAYERS) for site in ("pre", "post")]
    _, cache = lm.bridge.run_with_cache(tokens, names_filter=hooks)
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states  # embeddings first
        last = hf_final_norm(hf)(cache[resid_hook(N_LAYERS - 1)])
    assert len(hidden) == N_LAYERS + 1
    for layer in range(N_LAYERS):
        torch.testing.assert_close(cache[resid_hook(layer, "pre")], hidden[layer])
        if layer < N_LAYERS - 1:  # HF's last hidden state is after the final norm
            torch.testing.assert_close(cache[resid_hook(layer)], hidden[layer + 1])
    torch.testing.assert_close(last, hidden[-1])
    torch.testing.assert_close(residual_stream(lm, tokens, 1), hidden[2])


def test_harvest_caches_the_bridges_activations(loaded, tokens, tmp_path):
    _, lm, _ = loaded
    hooks = [resid_hook(0), resid_hook(N_LAYERS - 1)]
    cache = acts.harvest(
        lm, tokens, hooks, tmp_path, corpus_sha256="abc", batch_size=2,
        rows_per_shard=2 * N_CTX, progress=False,
    )  # fmt: skip
    assert cache.manifest["model"] == lm.name and len(cache.paths(hooks[0])) == 2
    _, direct = lm.bridge.run_with_cache(tokens, names_filter=hooks)
    for hook in hooks:
        torch.testing.assert_close(cache.load(hook), direct[hook].reshape(-1, D_MODEL))


def test_an_sae_is_scored_on_a_folder_model(loaded, tokens, tmp_path):
    # the chapters' path: harvest, the site from the cache (named by the folder), splice
    _, lm, _ = loaded
    hook = resid_hook(1)
    cache = acts.harvest(lm, tokens, [hook], tmp_path, corpus_sha256="abc", skip_first=1,
                         progress=False)  # fmt: skip
    site = cache.site(hook)
    assert site.model == lm.name
    scorer = LMScorer(lm, site, cache.load(hook), tokens)
    sae = make_sae(SAEConfig(d_in=D_MODEL, d_sae=128, architecture="topk", k=8, seed=0))
    scores = scorer.score(sae)
    assert scores["spliced_loss"] != pytest.approx(scorer.clean, abs=1e-4)  # it spliced
    assert all(np.isfinite(scores[k]) for k in ("fvu", "delta_loss", "ce_loss_recovered"))


def test_spliced_loss_against_plain_hf(loaded, tokens):
    _, lm, hf = loaded
    assert next_token_loss(lm, tokens) == pytest.approx(hf_loss(hf, tokens), rel=1e-6)
    identity = spliced_losses(lm, tokens, resid_hook(1), lambda x: x.clone())
    assert identity["delta_loss"] == 0.0 and identity["ce_loss_recovered"] == 1.0
    zero = spliced_losses(lm, tokens, resid_hook(1), torch.zeros_like)
    assert zero["spliced_loss"] == pytest.approx(hf_loss(hf, tokens, 1, torch.zeros_like), 1e-6)
    assert abs(zero["spliced_loss"] - zero["clean_loss"]) > 1e-3  # the splice changed it


def test_zero_splice_at_the_last_block_is_the_bias_logits(loaded, tokens):
    # With the last residual stream zeroed, every position's logits are the unembedding
    # of the final norm's bias: a closed form independent of the bridge.
    _, lm, hf = loaded
    with torch.no_grad():
        logits = hf.get_output_embeddings()(hf_final_norm(hf).bias).double()
    expected = F.cross_entropy(logits.expand(tokens[:, 1:].numel(), -1), tokens[:, 1:].flatten())
    got = next_token_loss(lm, tokens, resid_hook(N_LAYERS - 1), torch.zeros_like)
    assert got == pytest.approx(expected.item(), rel=1e-6)


def test_bos_follows_the_architecture(loaded, tokens):
    arch, lm, _ = loaded
    bos = lm.tokenizer.bos_token_id
    assert lm.prepend_bos == (arch == "gpt2")  # TransformerLens: GPT-2 yes, GPT-NeoX no
    assert (tokens[:, 0] == bos).all().item() == (arch == "gpt2")


def test_bos_rules(tmp_path):
    special, added, none = (
        save_tokenizer(tmp_path / b, bos=b) for b in ("special", "added", "none")
    )
    assert added("a")["input_ids"][0] == 0 and special("a")["input_ids"][0] != 0
    assert not uses_bos(none, "gpt2", True)  # 1: no BOS token
    assert uses_bos(added, "gpt_neox", False) and uses_bos(added, "llama", True)  # 2
    assert not uses_bos(special, "llama", True)  # 3: SmolLM2's case
    assert uses_bos(special, "gpt2", True) and not uses_bos(special, "gpt_neox", False)  # 4


def test_llama_folder_takes_no_bos(tiny_hf_folder, one_thread):
    lm = load_model(str(tiny_hf_folder("llama")))
    assert not lm.prepend_bos and lm.tokenize(["the cat"])[0][0] != lm.tokenizer.bos_token_id


def test_folder_loads_without_network(tiny_hf_folder, monkeypatch, one_thread):
    def refuse(*args, **kwargs):
        raise OSError("network use in a test that must run offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    folder = tiny_hf_folder("gpt2")
    monkeypatch.chdir(folder.parent)
    lm = load_model(f"./{folder.name}")  # a relative path names the same model
    assert lm.name == str(folder.resolve())


def _make(tmp_path, files):
    folder = tmp_path / "model"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(
    "files, match",
    [
        (None, r"model_name='.*/model': .*/model does not exist; pass a folder"),
        ({}, "has no config.json; no tokenizer files .*; no weights .*save_pretrained"),
        ({"config.json": "{}", "pytorch_model.bin": ""}, "pytorch_model.bin is a pickle"),
        ({"config.json": "{", "tokenizer.json": "{", "model.safetensors": ""},
         "could not be loaded from the folder .*/model: "),
    ],
)  # fmt: skip
def test_bad_folder_is_named(tmp_path, files, match):
    name = str(tmp_path / "model") if files is None else str(_make(tmp_path, files))
    with pytest.raises(ValueError, match=match):
        load_model(name)


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "model").write_text("")
    with pytest.raises(ValueError, match=r"/model is a file; pass a folder"):
        load_model(str(tmp_path / "model"))


def test_tiny_folders_are_seeded(tmp_path):
    a, b = (save_tiny_model(tmp_path / d, "pythia", n_layers=1) for d in "ab")
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    c = load_file(
        save_tiny_model(tmp_path / "c", "pythia", n_layers=1, seed=1) / "model.safetensors"
    )
    assert not torch.equal(wa["gpt_neox.embed_in.weight"], c["gpt_neox.embed_in.weight"])


@pytest.mark.parametrize("chapter", ["05_lm_scaling", "06_probing"])
def test_chapters_take_a_folder_as_model_name(chapter):
    # what `-p model_name /path/to/gpt2` reaches: scripts/chapters.py's parsing and the schema
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("chapters", root / "scripts" / "chapters.py")
    chapters = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chapters)
    for typed in ("/path/to/gpt2", "~/models/gpt2", "./gpt2"):
        values = chapters.notebook_defaults(chapter) | {"model_name": parse_value(typed)}
        assert check_chapter(values, chapter)["model_name"] == typed


def test_process_model_loads_once(tiny_hf_folder):
    from saelib.lm.model import process_model

    folder = str(tiny_hf_folder("gpt2"))
    first = process_model(folder)
    assert process_model(folder) is first
    assert first.name == str(Path(folder).resolve())
