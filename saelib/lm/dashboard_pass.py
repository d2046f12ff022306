"""The two passes behind a dashboard: statistics of every latent, then example windows.

The first pass (:func:`stream`) runs the model up to the site's block over every
sequence once, ``batch_size`` at a time, folds the SAE's codes into a
:class:`~saelib.lm.dashboard_state.StreamState`, and checkpoints that state (with the
reservoir's random generator) to one safetensors file every ``checkpoint_every`` batches
and at the end: a resumed pass continues at the next batch and ends in the same state as
an uninterrupted one, and a finished one is not run again. After it,
:func:`quantile_groups` picks the examples from the reservoir, and :func:`windows` reruns
only the sequences those examples are in.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from saelib.files import atomic_path, sha256_bytes
from saelib.io import read_tensors, tensor_bytes
from saelib.lm.activations import activation_rows
from saelib.lm.dashboard_state import StreamState, log_edges
from saelib.lm.model import LanguageModel
from saelib.lm.site import Site
from saelib.progress import progress_bar
from saelib.saes.base import inference

_FORMAT = "saelib.dashboard.checkpoint.v1"


@torch.no_grad()
def _codes(sae, lm: LanguageModel, site: Site, seqs: Tensor, bar) -> tuple[Tensor, int]:
    """Codes ``[n, n_ctx, d_sae]`` of ``seqs [n, n_ctx]`` (0 at left-out tokens), tokens kept."""
    n, n_ctx = seqs.shape
    x = activation_rows(lm, seqs, [site.hook], batch_size=n, bar=bar)[site.hook]  # [n * n_ctx, d]
    keep = site.keeps(x).reshape(n, n_ctx)
    keep[:, : site.skip_first] = False
    param = next(sae.parameters())
    with inference(sae):
        f = sae.encode(site.prepare(x).to(param.device, param.dtype)).float().cpu()
    f = f.reshape(n, n_ctx, -1) * keep[..., None]
    return f, int(keep.sum())


def _settings(sae, lm, tokens, site, config) -> dict:
    """What a checkpoint must share with the run that resumes it."""
    weights = tensor_bytes(sae.state_dict())  # safetensors bytes: any dtype, any device
    return {
        "format": _FORMAT,
        "model": lm.name,
        "site": site.to_dict(),
        "tokens_sha256": sha256_bytes(tokens.contiguous().numpy().tobytes()),
        "sae_sha256": sha256_bytes(weights),
        "config": asdict(config),
    }


def _load_checkpoint(path: Path, settings: dict):
    """(state, next batch, generator state) from ``path``, or None when there is none."""
    if not path.is_file():
        return None
    tensors = read_tensors(path)
    if "settings" not in tensors:
        raise ValueError(f"{path} is not a dashboard checkpoint (no 'settings' tensor)")
    found = json.loads(tensors.pop("settings").numpy().tobytes().decode())
    if found != settings:
        changed = sorted(k for k in settings if found.get(k) != settings[k])
        raise ValueError(
            f"checkpoint {path} was made with other settings (different {', '.join(changed)}); "
            f"delete it or pass another checkpoint path"
        )
    step, rng = int(tensors.pop("next_batch")), tensors.pop("generator")
    return StreamState.from_tensors(tensors), step, rng


def _save_checkpoint(path: Path, state: StreamState, step: int, gen, settings: dict) -> None:
    blob = torch.frombuffer(bytearray(json.dumps(settings).encode()), dtype=torch.uint8)
    tensors = dict(state.tensors(), settings=blob, generator=gen.get_state())
    tensors["next_batch"] = torch.tensor(step)
    with atomic_path(path) as tmp:  # the old checkpoint or the new one, never half
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)


def stream(sae, lm, tokens, site, config, checkpoint, progress) -> StreamState:
    """The first pass: every sequence once, ``batch_size`` at a time, checkpointed."""
    n_seq, n_ctx = tokens.shape
    d_sae = sae.W_dec.shape[0]
    gen = torch.Generator().manual_seed(config.seed)
    edges = log_edges(config.hist_low, config.hist_high, config.n_bins)
    state, start = StreamState.empty(d_sae, config.n_top, config.reservoir, edges), 0
    settings = _settings(sae, lm, tokens, site, config) if checkpoint else None
    if checkpoint and (found := _load_checkpoint(Path(checkpoint), settings)):
        state, start, rng = found
        gen.set_state(rng)
    b = config.batch_size
    n_batches = -(-n_seq // b)
    bar = progress_bar(progress, total=n_seq, initial=start * b, desc="dashboard", unit="seq")
    try:
        for step in range(start, n_batches):
            codes, kept = _codes(sae, lm, site, tokens[step * b : (step + 1) * b], bar)
            index = torch.arange(step * b * n_ctx, step * b * n_ctx + codes[..., 0].numel())
            state.update(codes.reshape(-1, d_sae), index, kept, gen)
            done = step + 1
            if checkpoint and (done % config.checkpoint_every == 0 or done == n_batches):
                _save_checkpoint(Path(checkpoint), state, done, gen, settings)
    finally:
        bar.close()
    return state


def quantile_groups(
    state: StreamState, latents: Tensor, n_groups: int, per_group: int, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Examples per activation-quantile group of each latent, from its reservoir.

    Group ``g`` holds the reservoir's firings with values in ``[q_g, q_{g+1})`` (the last
    group includes ``q_G``), ``q`` the reservoir's quantiles at ``g / n_groups``; up to
    ``per_group`` of them are drawn without replacement with ``gen``, shown largest first.
    Returns ``bounds [n_sel, n_groups + 1]`` (NaN for a latent that never fired),
    ``index`` and ``vals [n_sel, n_groups, per_group]`` (index -1, value 0 where empty).
    """
    n_sel = len(latents)
    bounds = torch.full((n_sel, n_groups + 1), float("nan"), dtype=torch.float64)
    index = torch.full((n_sel, n_groups, per_group), -1, dtype=torch.long)
    vals = torch.zeros(n_sel, n_groups, per_group)
    probs = torch.linspace(0, 1, n_groups + 1, dtype=torch.float64)
    for row, latent in enumerate(latents.tolist()):
        found = state.res_index[latent] >= 0
        v, idx = state.res_vals[latent][found], state.res_index[latent][found]
        if not len(v):
            continue
        bounds[row] = torch.quantile(v.double(), probs)
        group = torch.bucketize(v.double(), bounds[row, 1:-1], right=True)  # [n_found]
        for g in range(n_groups):
            members = (group == g).nonzero().flatten()
            pick = members[torch.randperm(len(members), generator=gen)[:per_group]]
            pick = pick[torch.argsort(v[pick], descending=True, stable=True)]
            index[row, g, : len(pick)], vals[row, g, : len(pick)] = idx[pick], v[pick]
    return bounds, index, vals


def windows(sae, lm, site, tokens, latents, index, window, batch_size, progress):
    """Tokens and activations ``[*index.shape, 2 * window + 1]`` around each example.

    ``index [n_sel, ...]`` holds flat token indices (-1: none) of examples of the latent
    ``latents[row]``. Only the sequences holding an example are run, ``batch_size`` at a
    time, and each only up to its last needed position: in a causal model the activation
    at a position depends on the tokens up to it alone. Sequences of similar needed length
    share a batch. Outside the sequence the token is -1 and the activation 0.
    """
    n_seq, n_ctx = tokens.shape
    shape, flat = index.shape, index.reshape(-1)
    column = torch.arange(len(latents)).view(-1, *[1] * (index.dim() - 1)).expand(shape)
    column = column.reshape(-1)  # [n_examples]: which selected latent
    offsets = torch.arange(-window, window + 1)
    out_tok = torch.full((flat.numel(), len(offsets)), -1, dtype=torch.long)
    out_act = torch.zeros(flat.numel(), len(offsets))
    valid = flat >= 0
    seq, pos = flat[valid] // n_ctx, flat[valid] % n_ctx  # [m] each
    examples = valid.nonzero().flatten()  # [m] rows of out_tok / out_act
    last = torch.full((n_seq,), -1).scatter_reduce(
        0, seq, (pos + window).clamp(max=n_ctx - 1), "amax"
    )  # [n_seq] last position needed, -1: none
    needed = last.ge(0).nonzero().flatten()
    needed = needed[torch.argsort(last[needed], stable=True)]
    row_of = torch.full((n_seq,), -1)
    bar = progress_bar(progress, total=len(needed), desc="dashboard windows", unit="seq")
    try:
        for chunk in needed.split(batch_size):
            n = int(last[chunk].max()) + 1
            codes, _ = _codes(sae, lm, site, tokens[chunk, :n], bar)
            codes = codes[..., latents]  # [b, n, n_sel]
            row_of[chunk] = torch.arange(len(chunk))
            mine = row_of[seq] >= 0
            e, r = examples[mine], row_of[seq[mine]][:, None]  # [k], [k, 1] row within chunk
            p = pos[mine][:, None] + offsets  # [k, 2w+1]
            inside, p = (p >= 0) & (p < n_ctx), p.clamp(0, n_ctx - 1)
            out_tok[e] = torch.where(inside, tokens[chunk[r], p], -1)
            out_act[e] = torch.where(inside, codes[r, p.clamp(max=n - 1), column[e][:, None]], 0.0)
            row_of[chunk] = -1
    finally:
        bar.close()
    return out_tok.reshape(*shape, -1), out_act.reshape(*shape, -1)
