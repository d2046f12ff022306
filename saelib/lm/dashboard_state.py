"""Per-latent statistics of one streaming pass, in memory bounded by the number of latents.

    state = StreamState.empty(d_sae, n_top=20, reservoir=200, edges=log_edges(1e-3, 1e3, 40))
    for codes, index in batches:     # codes [rows, d_sae] (0 where a token is left out),
        state.update(codes, index, generator)      # index [rows] long: flat token index
    state.fire_count, state.hist, state.top_vals, state.top_index, state.res_vals ...

A latent *fires* on a token when its code is > 0 (as ``SAEOutput.fired``). Kept per latent:

- ``fire_count``: tokens it fired on; ``hist``: those activations in fixed log-spaced bins
  (:func:`log_edges`; values below the first edge count in the first bin, values at or
  above the last edge in the last one, so every firing is counted once).
- an exact running top-k: activation descending, ties to the earlier token (the smaller
  flat index), so it equals a stable sort of every activation of the pass (tested).
- a reservoir: every firing draws a uniform random key and each latent keeps the
  ``reservoir`` smallest keys ("bottom-k" sampling). That is a uniform sample without
  replacement of the latent's firings, as Vitter's algorithm R gives, but it merges a
  whole batch with one sort, like the top-k. With fewer firings than ``reservoir`` it
  holds every firing.

Batches must come in increasing token order (the tie rule relies on it). Empty slots hold
index -1 (value 0; reservoir key +inf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor


def log_edges(low: float, high: float, n_bins: int) -> Tensor:
    """``n_bins + 1`` log-spaced histogram edges from ``low`` to ``high`` (float64)."""
    return torch.logspace(math.log10(low), math.log10(high), n_bins + 1, dtype=torch.float64)


def _merge(keys: Tensor, new_keys: Tensor, payloads, k: int, desc: bool):
    """The first ``k`` of running ``keys [d_sae, m]`` and ``new_keys [d_sae, m']`` in sorted
    order, and each ``(running, new)`` pair of ``payloads`` gathered alike.

    A stable sort keeps equal keys in column order; the running entries come first and
    precede every new token, so ties go to the earlier token.
    """
    v, order = torch.sort(torch.cat([keys, new_keys], 1), dim=1, descending=desc, stable=True)
    keep = order[:, :k]
    out = [torch.cat(pair, 1).gather(1, keep).contiguous() for pair in payloads]
    return v[:, :k].contiguous(), out


def _batch_best(values: Tensor, k: int, desc: bool) -> tuple[Tensor, Tensor]:
    """Best ``k`` entries per row of ``values [d_sae, rows]`` (stable) and their columns."""
    v, order = torch.sort(values, dim=1, descending=desc, stable=True)
    k = min(k, values.shape[1])
    return v[:, :k], order[:, :k]  # [d_sae, k] each


@dataclass
class StreamState:
    """Running statistics of a pass; every field a tensor, so it saves as safetensors."""

    fire_count: Tensor  # [d_sae] long
    hist: Tensor  # [d_sae, n_bins] long
    edges: Tensor  # [n_bins + 1] float64
    top_vals: Tensor  # [d_sae, n_top] float32, descending
    top_index: Tensor  # [d_sae, n_top] long flat token index, -1 empty
    res_keys: Tensor  # [d_sae, reservoir] float32 ascending, +inf empty
    res_vals: Tensor  # [d_sae, reservoir] float32
    res_index: Tensor  # [d_sae, reservoir] long, -1 empty
    n_counted: Tensor  # [] long: tokens seen (left-out ones excluded)

    @classmethod
    def empty(cls, d_sae: int, n_top: int, reservoir: int, edges: Tensor) -> StreamState:
        def none(k):
            return torch.full((d_sae, k), -1, dtype=torch.long)

        return cls(
            fire_count=torch.zeros(d_sae, dtype=torch.long),
            hist=torch.zeros(d_sae, len(edges) - 1, dtype=torch.long),
            edges=edges.to(torch.float64),
            top_vals=torch.zeros(d_sae, n_top),
            top_index=none(n_top),
            res_keys=torch.full((d_sae, reservoir), math.inf),
            res_vals=torch.zeros(d_sae, reservoir),
            res_index=none(reservoir),
            n_counted=torch.zeros((), dtype=torch.long),
        )

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> StreamState:
        return cls(**{f.name: tensors[f.name] for f in fields(cls)})

    @torch.no_grad()
    def update(self, codes: Tensor, index: Tensor, n_kept: int, generator: torch.Generator):
        """Fold in ``codes [rows, d_sae]`` of the tokens ``index [rows]`` (increasing).

        ``n_kept``: how many of the rows are real tokens (the others, left out, are 0).
        ``generator`` draws the reservoir keys: the same generator state, the same sample.
        """
        codes = codes.float()
        fired = codes > 0  # [rows, d_sae]
        self.n_counted += n_kept
        self.fire_count += fired.sum(0)
        rows, lat = fired.nonzero(as_tuple=True)
        vals = codes[rows, lat].double()
        bins = torch.bucketize(vals, self.edges[1:-1], right=True)  # [0, n_bins - 1]
        n_bins = self.hist.shape[1]
        self.hist.view(-1).index_add_(0, lat * n_bins + bins, torch.ones_like(bins))

        acts = codes.T.clamp_min(0)  # [d_sae, rows]: a negative code does not fire
        n_top = self.top_vals.shape[1]
        v, pos = _batch_best(acts, n_top, desc=True)
        v, (i,) = _merge(self.top_vals, v, [(self.top_index, index[pos])], n_top, desc=True)
        self.top_vals, self.top_index = v, torch.where(v > 0, i, -1)

        keys = torch.rand(codes.shape, generator=generator).T  # [d_sae, rows]
        keys = torch.where(fired.T, keys, math.inf)
        k_res = self.res_keys.shape[1]
        kb, pos = _batch_best(keys, k_res, desc=False)
        payloads = [(self.res_index, index[pos]), (self.res_vals, acts.gather(1, pos))]
        self.res_keys, (i, v) = _merge(self.res_keys, kb, payloads, k_res, desc=False)
        empty = torch.isinf(self.res_keys)
        self.res_index = torch.where(empty, -1, i)
        self.res_vals = torch.where(empty, 0.0, v)
