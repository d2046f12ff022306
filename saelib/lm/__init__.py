"""SAEs on a language model: loading it offline, a real-text corpus, cached activations.

``model``: language models by name through TransformerLens's bridge, hook names.
``sources``: pinned, verified downloads and the cache directory. ``corpus``: a deterministic
real-text corpus packed into sequences. ``activations``: the sharded activation cache.
``splice``: next-token loss with a reconstruction spliced in. ``sweep``: SAEs trained and
scored on cached activations.
"""

from saelib.lm.model import LanguageModel, hook_layer, load_model, resid_hook
from saelib.lm.sources import cache_dir

__all__ = ["LanguageModel", "cache_dir", "hook_layer", "load_model", "resid_hook"]
