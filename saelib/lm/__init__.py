"""SAEs on a language model: loading it offline, a real-text corpus, cached activations.

``model``: language models by name or local Hugging Face folder through TransformerLens's
bridge, hook names. ``sources``: pinned, verified downloads and the cache directory.
``corpus``: a deterministic real-text corpus packed into sequences. ``activations``: the
sharded activation cache. ``site``: the record of where an SAE was trained (hook, scale,
norm limit, skipped positions), saved with it. ``splice``: next-token loss with a
reconstruction spliced in. ``sweep``: SAEs scored on cached activations and spliced into
the model. ``scaling``: power laws in the number of latents.
"""

from saelib.lm.model import LanguageModel, hook_layer, load_model, resid_hook
from saelib.lm.site import Site, load_trained, save_trained
from saelib.lm.sources import cache_dir

__all__ = [
    "LanguageModel",
    "Site",
    "cache_dir",
    "hook_layer",
    "load_model",
    "load_trained",
    "resid_hook",
    "save_trained",
]
