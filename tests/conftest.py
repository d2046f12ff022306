"""Shared fixtures."""

import pytest
import torch
from tiny_models import save_tiny_model

from saelib.toys.synthetic import SyntheticConfig, SyntheticData


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine, tiny ops on 2 threads run ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_tiny_lm(directory, n_layers: int = 3, seed: int = 0):
    """A randomly initialised Llama (d_model 32, vocab 64) and a word-level tokenizer, bridged.

    Small enough that a forward takes milliseconds; the same code path as SmolLM2.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from saelib.lm.model import wrap

    words = "the cat sat on a mat and dog ran to big red house by sea in old town".split()
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "<s>"])
    tok.train_from_iterator([" ".join(words)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>")
    fast.save_pretrained(directory)
    fast = PreTrainedTokenizerFast.from_pretrained(directory)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    return wrap("tiny-llama", model, fast), model


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """(LanguageModel, HF model) of a tiny random Llama; shared, do not modify."""
    torch.set_num_threads(1)
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def tiny_hf_folder(tmp_path_factory):
    """``folder(arch)``: a tiny random ``arch`` ("gpt2", "pythia", "llama") saved as a
    Hugging Face folder (tests/tiny_models.py), built once per session; do not modify."""
    made = {}

    def folder(arch: str):
        if arch not in made:
            made[arch] = save_tiny_model(tmp_path_factory.mktemp(f"tiny_{arch}"), arch)
        return made[arch]

    return folder


def assert_matches_finite_differences(params, loss, analytic, n=6, eps=1e-6, atol=1e-5, seed=0):
    """Central differences of ``loss()`` at ``n`` random entries of each float64 parameter
    against the ``analytic`` gradients (one per parameter): an independent check."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p, grad in zip(params, analytic, strict=True):
            flat = p.view(-1)
            for i in torch.randperm(p.numel(), generator=g)[:n]:
                old = flat[i].item()
                flat[i] = old + eps
                up = loss().item()
                flat[i] = old - eps
                down = loss().item()
                flat[i] = old
                assert abs((up - down) / (2 * eps) - grad.reshape(-1)[i].item()) < atol


PLANTED = SyntheticConfig(
    n_features=48, d=24, mean_active=3.0, frequency="uniform", magnitude="halfnormal", seed=0
)
"""The planted dictionary of the recovery tests: 48 unit Gaussian atoms in 24 dimensions, about
3 active per sample, uniform frequencies, |N(0,1)| magnitudes; do not modify (the reference run
in ``benchmarks/results/planted_recovery.json`` was made on it)."""


def planted_samples():
    """(train, test): 16,384 and 4,096 samples of ``PLANTED`` (also used by
    ``benchmarks/planted_recovery.py``)."""
    data = SyntheticData(PLANTED)
    return data.sample(16384, generator=1), data.sample(4096, generator=2)


@pytest.fixture(scope="session")
def planted():
    """(train, test) samples of the planted dictionary ``PLANTED``."""
    return planted_samples()
