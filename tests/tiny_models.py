"""Tiny randomly initialised Hugging Face models saved to folders, for offline tests.

    folder = save_tiny_model(tmp_path, "gpt2")   # config.json, model.safetensors, tokenizer
    lm = saelib.lm.load_model(str(folder))       # the local-folder path, no network

Each architecture is the real Hugging Face class (``GPT2LMHeadModel``,
``GPTNeoXForCausalLM``, ``LlamaForCausalLM``) at toy size, so the bridge's adapter for it
is the one a full-size model goes through. The tokenizer is a byte-level BPE (as GPT-2's
and Pythia's are) trained on a few sentences: any text tokenizes, with no unknown tokens,
and decodes back. Seeded: the same arguments give the same weights and vocabulary.
The fixture ``tiny_hf_folder`` (tests/conftest.py) builds each folder once per session.

Reference computations on plain Hugging Face models (no bridge) sit here too: the blocks,
the final norm and the next-token loss with a block's output replaced.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

ARCHITECTURES = ("gpt2", "pythia", "llama")
BOS = "<|endoftext|>"  # GPT-2's and Pythia's BOS, EOS and padding token
TEXTS = [
    "The cat sat on the mat, and the dog ran to the big red house by the sea.",
    "In the old town, people talk about the weather over tea at four o'clock.",
    "Numbers like 1, 2 and 42 appear in text; so do names such as Ada and Alan.",
]


def save_tokenizer(directory: str | Path, vocab_size: int = 320, bos: str = "special"):
    """A byte-level BPE tokenizer trained on :data:`TEXTS`, saved to ``directory``.

    Its vocabulary is the 256 byte symbols, :data:`BOS` (id 0, also EOS and padding) and
    merges up to ``vocab_size``. ``bos``: ``"special"`` (GPT-2's way: a BOS token the
    tokenizer never inserts), ``"added"`` (the tokenizer puts it first, as Llama 2's
    does) or ``"none"`` (no BOS token). Returns the tokenizer reloaded from the folder
    (so its ``name_or_path`` is the folder, which the bridge reloads).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer)
    if bos == "added":
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, 0)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=None if bos == "none" else BOS, eos_token=BOS,
        unk_token=BOS, pad_token=BOS,
    )  # fmt: skip
    fast.save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


def tiny_config(arch: str, vocab_size: int, n_layers: int, d_model: int, n_heads: int):
    """The Hugging Face config of a tiny ``arch`` (one of :data:`ARCHITECTURES`).

    Context 64 tokens, MLP width ``2 * d_model``; token id 0 is BOS and EOS. Pythia keeps
    GPT-NeoX's parallel attention and MLP (so its blocks have no ``hook_resid_mid``).
    """
    import transformers as t

    ids = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if arch == "gpt2":
        return t.GPT2Config(
            vocab_size=vocab_size, n_positions=64, n_embd=d_model, n_layer=n_layers,
            n_head=n_heads, n_inner=2 * d_model, **ids,
        )  # fmt: skip
    shared = dict(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
        num_hidden_layers=n_layers, num_attention_heads=n_heads, max_position_embeddings=64,
    )  # fmt: skip
    if arch == "pythia":
        return t.GPTNeoXConfig(use_parallel_residual=True, rotary_pct=0.25, **shared, **ids)
    if arch == "llama":
        return t.LlamaConfig(num_key_value_heads=n_heads // 2, **shared, **ids)
    raise ValueError(f"arch must be one of {list(ARCHITECTURES)}, got {arch!r}")


def save_tiny_model(
    directory: str | Path,
    arch: str = "gpt2",
    n_layers: int = 3,
    d_model: int = 64,
    n_heads: int = 4,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised ``arch`` and its tokenizer in ``directory``; returns it.

    The folder is what ``save_pretrained`` writes for a hub model: ``config.json``,
    ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``.
    """
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    tokenizer = save_tokenizer(directory)
    cfg = tiny_config(arch, len(tokenizer), n_layers, d_model, n_heads)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(directory)
    return directory


# where a plain HF causal LM keeps its blocks and final norm, per config.model_type
_BLOCKS = {"gpt2": "h", "gpt_neox": "layers", "llama": "layers"}
_FINAL_NORM = {"gpt2": "ln_f", "gpt_neox": "final_layer_norm", "llama": "norm"}


def hf_blocks(hf) -> torch.nn.ModuleList:
    """The transformer blocks of a plain HF causal LM, in order."""
    return getattr(hf.base_model, _BLOCKS[hf.config.model_type])


def hf_final_norm(hf) -> torch.nn.Module:
    """The norm between the last block and the unembedding."""
    return getattr(hf.base_model, _FINAL_NORM[hf.config.model_type])


def hf_loss(hf, tokens, layer: int | None = None, fn=None) -> float:
    """Mean next-token loss of plain HF on ``tokens [n_seq, n_ctx]`` (float64 logits), the
    output of block ``layer`` replaced by ``fn(output)`` when ``fn`` is given."""
    handles = []
    if fn is not None:

        def hook(module, args, out):
            return (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out)

        handles.append(hf_blocks(hf)[layer].register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = hf(tokens).logits.double()
    finally:
        for h in handles:
            h.remove()
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()).item()
