"""Feature dashboards: what each latent of an SAE responds to on a corpus, in one pass.

    site = Site(model=lm.name, hook="blocks.6.hook_resid_post", scale=1.0)
    dash = compute_dashboard(sae, lm, corpus.tokens, site, latents=[3, 17, 40])
    dash.save("runs/dash")                 # dashboard.safetensors + dashboard.json
    dash = Dashboard.load("runs/dash")
    saelib.lm.dashboard_html.write_site(dash, "runs/dash/html")

The layout is Anthropic's (Towards Monosemanticity, 2023; reproduced by sae_vis):

- over the whole corpus, for every latent: firing density, a histogram of its nonzero
  activations, its ``n_top`` top activations (exact) and a uniform reservoir sample of its
  firings (:mod:`saelib.lm.dashboard_state`), from one streaming pass of ``batch_size``
  sequences at a time, checkpointed every ``checkpoint_every`` batches when asked;
- for the selected ``latents``: ``n_groups`` activation-quantile groups of ``per_group``
  examples, drawn after the pass from the reservoir (group ``g`` spans the reservoir's
  quantiles ``g / n_groups`` to ``(g + 1) / n_groups``, which are the exact quantiles of
  the latent's firings when it fired fewer than ``reservoir`` times). sae_vis splits the
  activation *range* into equal widths instead; quantiles show typical firings, and the
  top-k shows the high end. Each example comes with ``window`` tokens either side and the
  latent's activation on each, from a second pass over only the sequences needed;
- the tokens whose logits the decoder direction raises and lowers most: ``W_dec[i] / scale``
  (the raw residual unit), centred first if the final norm is a LayerNorm, times the final
  norm's weight, through the unembedding ``W_U``. An approximation (the "direct logit
  effect"): it ignores the norm's division by the residual's size, the unembedding bias and
  every block after the hook;
- the nearest latents by cosine between decoder rows.

Tokens the site leaves out (the first ``site.skip_first`` of each sequence, and rows above
``site.max_norm``) count as not firing, and are not counted in the density's denominator.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from saelib.files import atomic_path
from saelib.io import read_json, read_tensors
from saelib.lm import dashboard_pass
from saelib.lm.model import LanguageModel, hook_layer
from saelib.lm.site import Site
from saelib.validation import check_int, check_real, is_int, require

_FORMAT = "saelib.dashboard.v1"
_TENSORS_FILE, _META_FILE = "dashboard.safetensors", "dashboard.json"


@dataclass(frozen=True)
class DashboardConfig:
    """Sizes of a dashboard pass; every field is checked at construction."""

    batch_size: int = 8
    """Sequences per forward pass (memory grows with it, not with the corpus)."""
    n_top: int = 20
    """Top-activating examples kept per latent (exactly, over the whole corpus)."""
    n_groups: int = 10
    """Activation-quantile groups shown per selected latent."""
    per_group: int = 5
    """Examples shown per quantile group."""
    reservoir: int = 250
    """Firings sampled uniformly per latent, from which the groups draw (>= groups x per_group)."""
    window: int = 5
    """Tokens shown either side of each example."""
    n_bins: int = 40
    """Histogram bins, log-spaced from ``hist_low`` to ``hist_high`` (SAE units)."""
    hist_low: float = 1e-3
    """First edge; smaller activations are counted in the first bin."""
    hist_high: float = 1e3
    """Last edge; larger activations are counted in the last bin."""
    n_promoted: int = 10
    """Promoted and suppressed tokens shown per latent."""
    n_nearest: int = 5
    """Nearest latents by decoder cosine shown per latent."""
    seed: int = 0
    """Seeds the reservoir keys and the picks within each group."""
    checkpoint_every: int = 50
    """Batches between checkpoints of the running state (with a checkpoint path)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_top", "n_groups", "per_group", "window", "n_bins"):
            check_int(f"DashboardConfig.{name}", getattr(self, name), low=1)
        for name in ("n_promoted", "n_nearest", "checkpoint_every"):
            check_int(f"DashboardConfig.{name}", getattr(self, name), low=1)
        check_int("DashboardConfig.seed", self.seed, low=0)
        need = self.n_groups * self.per_group
        check_int("DashboardConfig.reservoir", self.reservoir, low=need)
        check_real("DashboardConfig.hist_low", self.hist_low, low=0, open_low=True)
        check_real("DashboardConfig.hist_high", self.hist_high, low=self.hist_low, open_low=True)


@dataclass
class Dashboard:
    """A computed dashboard. Per latent ``[d_sae, ...]``; per selected latent ``[n_sel, ...]``.

    Windows are ``[..., 2 * window + 1]`` around the example's token (the centre); token
    ids are -1 (activation 0) outside the sequence. Example indices are flat token indices
    ``seq * n_ctx + pos``, -1 for an empty slot.
    """

    meta: dict  # model, hook, n_seq, n_ctx, config, token_text {id: str}
    fire_count: Tensor  # [d_sae] long
    n_counted: Tensor  # [] long: tokens counted in the density
    hist: Tensor  # [d_sae, n_bins] long
    edges: Tensor  # [n_bins + 1] float64
    top_vals: Tensor  # [d_sae, n_top]
    top_index: Tensor  # [d_sae, n_top] long
    latents: Tensor  # [n_sel] long: the selected latents
    top_tokens: Tensor  # [n_sel, n_top, 2w+1] long
    top_acts: Tensor  # [n_sel, n_top, 2w+1]
    group_bounds: Tensor  # [n_sel, n_groups + 1]
    group_index: Tensor  # [n_sel, n_groups, per_group] long
    group_vals: Tensor  # [n_sel, n_groups, per_group]
    group_tokens: Tensor  # [n_sel, n_groups, per_group, 2w+1] long
    group_acts: Tensor  # [n_sel, n_groups, per_group, 2w+1]
    promoted_ids: Tensor  # [n_sel, n_promoted] long, largest logit effect first
    promoted_vals: Tensor  # [n_sel, n_promoted] float64
    suppressed_ids: Tensor  # [n_sel, n_promoted] long, most negative first
    suppressed_vals: Tensor  # [n_sel, n_promoted] float64
    nearest_ids: Tensor  # [n_sel, n_nearest] long
    nearest_cos: Tensor  # [n_sel, n_nearest]

    @property
    def density(self) -> Tensor:
        """``[d_sae]`` fraction of counted tokens each latent fired on."""
        return self.fire_count.double() / max(int(self.n_counted), 1)

    def row(self, latent: int) -> int:
        """Position of ``latent`` among the selected ones."""
        hits = (self.latents == latent).nonzero().flatten()
        require(len(hits) == 1, "latent", latent, f"one of the selected {self.latents.tolist()}")
        return int(hits[0])

    def save(self, directory: str | Path) -> Path:
        """Write ``dashboard.safetensors`` and ``dashboard.json`` into ``directory`` (atomic)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f.name: getattr(self, f.name).contiguous() for f in fields(self)[1:]}
        with atomic_path(directory / _TENSORS_FILE) as tmp:
            save_file(tensors, tmp)
        meta = dict(self.meta, format=_FORMAT)
        with atomic_path(directory / _META_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Dashboard:
        """Read a dashboard written by :meth:`save`; a missing or foreign file raises."""
        directory = Path(directory)
        meta = read_json(directory / _META_FILE)
        fmt = meta.pop("format", None)
        if fmt != _FORMAT:
            raise ValueError(f"{directory / _META_FILE}: 'format' is {fmt!r}, expected {_FORMAT!r}")
        tensors = read_tensors(directory / _TENSORS_FILE)
        names = [f.name for f in fields(cls)[1:]]
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ValueError(f"{directory / _TENSORS_FILE}: missing tensors {missing}")
        return cls(meta, **{n: tensors[n] for n in names})


def _check(sae, lm: LanguageModel, tokens: Tensor, site: Site, latents, config) -> Tensor:
    """Validate the inputs; returns the selected latents as a long tensor."""
    ok = hasattr(sae, "encode") and getattr(sae, "W_dec", None) is not None
    require(ok, "sae", type(sae).__name__, "an SAE with encode() and W_dec [d_sae, d_in]")
    d_sae, d_in = sae.W_dec.shape
    require(d_in == lm.d_model, "sae", f"d_in={d_in}", f"d_in == the model's d_model {lm.d_model}")
    require(isinstance(site, Site), "site", type(site).__name__, "a saelib.lm.site.Site")
    require(site.model == lm.name, "site.model", site.model, f"the model's name {lm.name!r}")
    hook_layer(site.hook)
    require(site.hook in lm.bridge.hook_dict, "site.hook", site.hook, f"a hook of {lm.name}")
    ok = isinstance(tokens, Tensor) and tokens.dim() == 2 and tokens.dtype == torch.long
    shown = f"{tokens.dtype} {list(tokens.shape)}" if isinstance(tokens, Tensor) else tokens
    require(ok and tokens.numel() > 0, "tokens", shown, "a non-empty long tensor [n_seq, n_ctx]")
    vocab = lm.bridge.cfg.d_vocab
    ok = bool((tokens >= 0).all()) and bool((tokens < vocab).all())
    require(ok, "tokens", f"ids in [{int(tokens.min())}, {int(tokens.max())}]", f"in [0, {vocab})")
    require(site.skip_first < tokens.shape[1], "site.skip_first", site.skip_first, "< n_ctx")
    n = config.n_promoted
    require(n <= vocab, "DashboardConfig.n_promoted", n, f"<= the vocabulary size {vocab}")
    if latents is None:
        return torch.arange(d_sae)
    ok = len(latents) > 0 and all(is_int(i) and 0 <= i < d_sae for i in latents)
    ok = ok and len(set(latents)) == len(latents)
    require(ok, "latents", latents, f"a non-empty list of distinct integers in [0, {d_sae})")
    return torch.tensor(list(latents), dtype=torch.long)


@torch.no_grad()
def promoted_tokens(lm: LanguageModel, W_dec: Tensor, scale: float, n: int, chunk: int = 32):
    """Tokens whose logits the rows ``W_dec [n_sel, d_in]`` raise and lower most (float64).

    The direct logit effect ``((W_dec / scale) * g) @ W_U``, with ``g`` the final norm's
    weight (a LayerNorm centres the direction first). It leaves out the norm's division by
    the residual's size and every later block: the direction's first-order push on the
    logits, not what the model does with it. Returns ``(top ids, top values, bottom ids,
    bottom values)``, each ``[n_sel, n]``, largest (resp. most negative) first.
    """
    norm = lm.bridge.ln_final
    g = norm.weight.detach().double().cpu()  # [d_model]
    centre = "LayerNorm" in type(getattr(norm, "_original_component", norm)).__name__
    W_U = lm.bridge.W_U.detach()  # [d_model, d_vocab]
    out = [[], [], [], []]
    for rows in W_dec.detach().cpu().double().split(chunk):
        d = rows / scale  # [c, d_model] raw residual unit
        if centre:
            d = d - d.mean(-1, keepdim=True)
        d = d * g
        # vocabulary in slices: a float64 copy of W_U would be 8 bytes x d_model x d_vocab
        eff = torch.cat([d @ w.double().cpu() for w in W_U.split(8192, dim=1)], 1)
        top, bottom = eff.topk(n, dim=1), eff.topk(n, dim=1, largest=False)
        found = (top.indices, top.values, bottom.indices, bottom.values)
        for lst, t in zip(out, found, strict=True):
            lst.append(t)
    return tuple(torch.cat(lst) for lst in out)


@torch.no_grad()
def nearest_latents(W_dec: Tensor, latents: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The ``n`` latents (self excluded) whose decoder rows have the largest cosine with
    each of ``latents``'s; ``W_dec [d_sae, d_in]``. Returns ids and cosines ``[n_sel, n]``."""
    w = torch.nn.functional.normalize(W_dec.detach().float().cpu(), dim=1)
    cos = w[latents] @ w.T  # [n_sel, d_sae]
    cos[torch.arange(len(latents)), latents] = -torch.inf
    best = cos.topk(min(n, w.shape[0] - 1), dim=1)
    return best.indices, best.values


def compute_dashboard(
    sae,
    lm: LanguageModel,
    tokens: Tensor,
    site: Site,
    latents: list[int] | None = None,
    config: DashboardConfig | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> Dashboard:
    """Dashboards of ``latents`` (default: all) of ``sae`` at ``site`` on ``tokens``.

    ``sae`` codes ``site.prepare(x)`` of the activations ``x`` at ``site.hook``;
    ``tokens [n_seq, n_ctx]`` are the corpus. With ``checkpoint`` (a file path), the first
    pass saves its state there every ``config.checkpoint_every`` batches and resumes from
    it (the last save is at the end of the pass, so a repeated call skips the pass); a
    checkpoint made with other settings (SAE weights, tokens, site, config) raises. Returns
    a :class:`Dashboard` (see the module docstring for what it holds and how).
    """
    config = DashboardConfig() if config is None else config
    require(isinstance(config, DashboardConfig), "config", config, "a DashboardConfig")
    latents = _check(sae, lm, tokens, site, latents, config)
    state = dashboard_pass.stream(sae, lm, tokens, site, config, checkpoint, progress)
    gen = torch.Generator().manual_seed(config.seed + 1)  # the picks: apart from the keys
    bounds, g_index, g_vals = dashboard_pass.quantile_groups(
        state, latents, config.n_groups, config.per_group, gen
    )
    ex_index = torch.cat([state.top_index[latents], g_index.flatten(1)], dim=1)
    args = (sae, lm, site, tokens, latents, ex_index, config.window, config.batch_size, progress)
    win_tok, win_act = dashboard_pass.windows(*args)
    n_top, shape = config.n_top, (*g_index.shape, -1)
    pro_i, pro_v, sup_i, sup_v = promoted_tokens(
        lm, sae.W_dec.detach().cpu()[latents], site.scale, config.n_promoted
    )
    near_i, near_c = nearest_latents(sae.W_dec, latents, config.n_nearest)
    used = torch.cat([win_tok.flatten(), pro_i.flatten(), sup_i.flatten()]).unique()
    text = {str(i): lm.tokenizer.decode([i]) for i in used.tolist() if i >= 0}
    n_seq, n_ctx = tokens.shape
    meta = {"model": lm.name, "hook": site.hook, "site": site.to_dict(), "n_seq": n_seq}
    meta.update(n_ctx=n_ctx, config=asdict(config), token_text=text)
    return Dashboard(
        meta=meta,
        fire_count=state.fire_count,
        n_counted=state.n_counted,
        hist=state.hist,
        edges=state.edges,
        top_vals=state.top_vals,
        top_index=state.top_index,
        latents=latents,
        top_tokens=win_tok[:, :n_top].contiguous(),
        top_acts=win_act[:, :n_top].contiguous(),
        group_bounds=bounds,
        group_index=g_index,
        group_vals=g_vals,
        group_tokens=win_tok[:, n_top:].reshape(shape).contiguous(),
        group_acts=win_act[:, n_top:].reshape(shape).contiguous(),
        promoted_ids=pro_i,
        promoted_vals=pro_v,
        suppressed_ids=sup_i,
        suppressed_vals=sup_v,
        nearest_ids=near_i,
        nearest_cos=near_c,
    )
