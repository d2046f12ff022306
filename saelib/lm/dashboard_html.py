"""Static HTML for feature dashboards: a folder of pages, or one latent as a fragment.

    write_site(dash, "runs/dash/html")         # index.html + latent_<i>.html, no network
    html = latent_fragment(dash, 17)           # <style> + one latent, for a notebook cell:
    IPython.display.HTML(html)                 # also renders inside a Jupyter Book page

Rendered with Jinja2 with autoescape on (tokens are untrusted text), from the templates in
``saelib/lm/templates``; the stylesheet is inlined, the histogram is inline SVG, so a page
needs no other file and no server. Tokens keep their spaces (``white-space: pre``);
newlines, tabs and space-only tokens are shown as ``↵``, ``⇥`` and ``·`` in a muted
colour. A token's background is the highlight colour at opacity ``0.2 + 0.8 a / a_max``
where it fires (``a`` its activation, ``a_max`` the latent's largest), none where it
does not; the colours are set for light and dark themes (``prefers-color-scheme``, and
Jupyter Book's ``html[data-theme]``).
"""

from __future__ import annotations

import math
from pathlib import Path

import jinja2

from saelib.files import atomic_path
from saelib.lm.dashboard import Dashboard
from saelib.validation import require

TEMPLATES = Path(__file__).parent / "templates"
_WS = {"\n": "↵", "\t": "⇥", "\r": "␍"}


def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(TEMPLATES)
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)


def page_name(latent: int) -> str:
    """File name of a latent's page in the folder :func:`write_site` writes."""
    return f"latent_{latent}.html"


def _parts(text: str) -> list[dict]:
    """A token's text as runs, whitespace marked ``ws`` and made visible."""
    if text == "":
        return [{"text": "∅", "ws": True}]
    if text.strip(" ") == "":
        return [{"text": "·" * len(text), "ws": True}]
    parts: list[dict] = []
    for ch in text:
        ws = ch in _WS
        shown = _WS.get(ch, ch)
        if parts and parts[-1]["ws"] == ws:
            parts[-1]["text"] += shown
        else:
            parts.append({"text": shown, "ws": ws})
    return parts


def _example(dash: Dashboard, ids, acts, value: float, a_max: float) -> dict:
    """One context for the template: tokens with their activation, alpha and text."""
    text = dash.meta["token_text"]
    centre = len(ids) // 2
    tokens = []
    for j, (i, a) in enumerate(zip(ids.tolist(), acts.tolist(), strict=True)):
        if i < 0:
            continue  # outside the sequence
        alpha = f"{0.2 + 0.8 * min(a / a_max, 1.0):.2f}" if a > 0 and a_max > 0 else ""
        title = f"{text.get(str(i), '')!r}: {a:.4g}"
        part = _parts(text.get(str(i), "\ufffd"))
        tokens.append({"parts": part, "alpha": alpha, "title": title, "centre": j == centre})
    return {"value": value, "tokens": tokens}


def _histogram(dash: Dashboard, latent: int, width: int = 320, height: int = 80) -> dict | None:
    """Bars and decade ticks of the latent's histogram as SVG coordinates (None: no firing)."""
    counts = dash.hist[latent].double()
    if counts.sum() == 0:
        return None
    edges = dash.edges.log10()
    n, top = len(counts), counts.max().item()
    pad = 14  # room for the end ticks' labels
    w = (width - 2 * pad) / n
    bars = []
    for b, c in enumerate(counts.tolist()):
        h = height * c / top
        lo, hi = 10 ** edges[b].item(), 10 ** edges[b + 1].item()
        bars.append(
            {
                "x": f"{pad + b * w:.1f}",
                "w": f"{w * 0.9:.1f}",
                "y": f"{height - h:.1f}",
                "h": f"{h:.1f}",
            }
        )
        bars[-1]["title"] = f"[{lo:.3g}, {hi:.3g}): {int(c)}"
    first, last = edges[0].item(), edges[-1].item()
    ticks = [
        {"x": f"{pad + (d - first) / (last - first) * (width - 2 * pad):.1f}", "label": f"1e{d}"}
        for d in range(math.ceil(first), math.floor(last) + 1)
    ]
    return {"bars": bars, "ticks": ticks, "width": width, "height": height}


def _view(dash: Dashboard, latent: int, linked: set[int]) -> dict:
    """Everything the latent's template shows, as plain numbers and strings."""
    row = dash.row(latent)
    text = dash.meta["token_text"]
    a_max = dash.top_vals[latent, 0].item()
    top = [
        _example(dash, dash.top_tokens[row, e], dash.top_acts[row, e], v, a_max)
        for e, v in enumerate(dash.top_vals[latent].tolist())
        if dash.top_index[latent, e] >= 0
    ]
    groups = []
    bounds = dash.group_bounds[row]
    for g in range(dash.group_index.shape[1]):
        examples = [
            _example(dash, dash.group_tokens[row, g, e], dash.group_acts[row, g, e], v, a_max)
            for e, v in enumerate(dash.group_vals[row, g].tolist())
            if dash.group_index[row, g, e] >= 0
        ]
        lo, hi = bounds[g].item(), bounds[g + 1].item()
        label = f"Quantile group {g + 1}: activations {lo:.3g} to {hi:.3g}"
        groups.append({"label": label, "examples": examples})

    def tokens(ids, vals):
        return [
            {"parts": _parts(text.get(str(i), "")), "value": f"{v:+.3g}"}
            for i, v in zip(ids, vals, strict=True)
        ]

    nearest = [
        {"latent": n, "cos": f"{c:.3f}", "href": page_name(n) if n in linked else None}
        for n, c in zip(dash.nearest_ids[row].tolist(), dash.nearest_cos[row].tolist(), strict=True)
    ]
    return {
        "latent": latent,
        "model": dash.meta["model"],
        "hook": dash.meta["hook"],
        "fires": int(dash.fire_count[latent]),
        "counted": int(dash.n_counted),
        "density": f"{dash.density[latent].item():.3g}",
        "max": f"{a_max:.3g}",
        "hist": _histogram(dash, latent),
        "top": top,
        "groups": groups if any(g["examples"] for g in groups) else [],
        "promoted": tokens(dash.promoted_ids[row].tolist(), dash.promoted_vals[row].tolist()),
        "suppressed": tokens(dash.suppressed_ids[row].tolist(), dash.suppressed_vals[row].tolist()),
        "nearest": nearest,
    }


def _check_latent(dash: Dashboard, latent: int) -> None:
    require(isinstance(dash, Dashboard), "dash", type(dash).__name__, "a saelib Dashboard")
    dash.row(latent)  # a selected latent, or a clear error


def latent_fragment(dash: Dashboard, latent: int) -> str:
    """One latent's dashboard as an HTML fragment (its ``<style>`` included), to embed."""
    _check_latent(dash, latent)
    view = _view(dash, latent, linked=set())
    return _environment().get_template("fragment.html").render(v=view)


def write_site(dash: Dashboard, directory: str | Path) -> Path:
    """Write ``index.html`` and one ``latent_<i>.html`` per selected latent to ``directory``.

    The folder is written whole (to a temporary name, then renamed) and replaces an
    existing one. Nearest latents link to their pages when they have one.
    """
    require(isinstance(dash, Dashboard), "dash", type(dash).__name__, "a saelib Dashboard")
    env = _environment()
    latents = dash.latents.tolist()
    linked = set(latents)
    rows = []
    for latent in latents:
        row = dash.row(latent)
        first = dash.top_tokens[row, :3, dash.top_tokens.shape[-1] // 2].tolist()
        preview = " | ".join(dash.meta["token_text"].get(str(i), "") for i in first if i >= 0)
        density = f"{dash.density[latent].item():.3g}"
        href, a_max = page_name(latent), f"{dash.top_vals[latent, 0].item():.3g}"
        rows.append(
            {"latent": latent, "href": href, "density": density, "max": a_max, "preview": preview}
        )
    directory = Path(directory)
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        index = env.get_template("index.html").render(
            rows=rows, counted=int(dash.n_counted), **_meta(dash)
        )
        (tmp / "index.html").write_text(index, encoding="utf-8")
        page = env.get_template("latent.html")
        for k, latent in enumerate(latents):
            prev = page_name(latents[k - 1]) if k > 0 else None
            nxt = page_name(latents[k + 1]) if k + 1 < len(latents) else None
            html = page.render(v=_view(dash, latent, linked), prev=prev, next=nxt)
            (tmp / page_name(latent)).write_text(html, encoding="utf-8")
    return directory


def _meta(dash: Dashboard) -> dict:
    keys = ("model", "hook", "n_seq", "n_ctx")
    return {k: dash.meta[k] for k in keys}
