"""Feature dashboards: the streaming statistics against brute force over every activation,
the examples and windows against the model's own hidden states, the promoted tokens
against a float64 computation from the HF weights, resume, and the HTML."""

import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saelib.lm import dashboard_pass
from saelib.lm.dashboard import Dashboard, DashboardConfig, compute_dashboard
from saelib.lm.dashboard_html import latent_fragment, page_name, write_site
from saelib.lm.dashboard_state import StreamState, log_edges
from saelib.lm.site import Site
from saelib.saes import SAEConfig, make_sae

LAYER, SCALE = 1, 3.0
CFG = DashboardConfig(
    batch_size=3,
    n_top=6,
    n_groups=3,
    per_group=2,
    reservoir=8,
    window=2,
    n_bins=12,
    hist_low=1e-3,
    hist_high=1.0,
    n_promoted=4,
    n_nearest=3,
    checkpoint_every=1,
)


# -- the streaming statistics on synthetic codes -------------------------------------------
def synthetic_codes(n=240, d_sae=7, seed=0):
    """Codes with many exact ties (values on a coarse grid), zeros and a never-firing latent."""
    g = torch.Generator().manual_seed(seed)
    codes = (torch.randn(n, d_sae, generator=g).clamp_min(0) * 4).round() / 4  # ties
    codes[:, 3] = 0.0  # a dead latent
    codes[:, 5] *= 1e-4  # below the first histogram edge
    return codes


def run_state(codes, sizes, n_top=5, reservoir=6, seed=0):
    edges = log_edges(1e-3, 1.0, 9)
    state = StreamState.empty(codes.shape[1], n_top, reservoir, edges)
    gen = torch.Generator().manual_seed(seed)
    start = 0
    for size in sizes:
        part = codes[start : start + size]
        state.update(part, torch.arange(start, start + len(part)), len(part), gen)
        start += size
    assert start == len(codes)
    return state


@pytest.mark.parametrize("sizes", [[240], [7] * 34 + [2], [1, 100, 39, 100]])
def test_running_top_k_equals_a_stable_sort_of_every_activation(sizes):
    codes = synthetic_codes()
    state = run_state(codes, sizes)
    for j in range(codes.shape[1]):
        v = codes[:, j].numpy()
        order = np.lexsort((np.arange(len(v)), -v))  # value descending, then earlier token
        order = [i for i in order if v[i] > 0][:5]
        got = [i for i in state.top_index[j].tolist() if i >= 0]
        assert got == order
        assert state.top_vals[j, : len(order)].tolist() == v[order].tolist()
    assert (state.top_index[3] == -1).all()


def test_histogram_counts_sum_to_firing_counts_in_the_right_bins():
    codes = synthetic_codes()
    state = run_state(codes, [50] * 4 + [40])
    fired = codes > 0
    assert torch.equal(state.fire_count, fired.sum(0))
    assert torch.equal(state.hist.sum(1), state.fire_count)
    edges = state.edges.numpy()
    for j in range(codes.shape[1]):
        v = codes[fired[:, j], j].double().numpy()
        bins = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
        assert state.hist[j].tolist() == np.bincount(bins, minlength=len(edges) - 1).tolist()
    assert state.hist[5, 0] == state.fire_count[5] > 0  # below the first edge: first bin


def test_reservoir_holds_every_firing_when_there_are_few():
    codes = synthetic_codes(n=40)
    state = run_state(codes, [9] * 4 + [4], reservoir=40)
    for j in range(codes.shape[1]):
        want = codes[:, j].gt(0).nonzero().flatten()
        got = state.res_index[j][state.res_index[j] >= 0]
        assert sorted(got.tolist()) == want.tolist()
        assert torch.equal(state.res_vals[j][state.res_index[j] >= 0], codes[got, j])


def test_reservoir_is_a_uniform_sample_of_the_firings():
    """Each of 20 firings lands in a reservoir of 5 with probability 1/4 (400 seeds)."""
    codes = torch.zeros(60, 1)
    firing = torch.arange(0, 60, 3)  # 20 firings
    codes[firing, 0] = 1.0
    counts = torch.zeros(60)
    for seed in range(400):
        state = run_state(codes, [7] * 8 + [4], reservoir=5, seed=seed)
        kept = state.res_index[0]
        assert len(set(kept.tolist())) == 5 and bool(codes[kept, 0].eq(1).all())
        counts[kept] += 1
    # Binomial(400, 1/4): mean 100, sd 8.7; 5 sd either side
    assert counts[firing].sub(100).abs().max() < 45
    assert counts.sum() == 2000


# -- the whole pass on a tiny Llama --------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tiny_lm, one_thread):
    lm, hf = tiny_lm
    torch.manual_seed(0)
    sae = make_sae(SAEConfig(d_in=32, d_sae=12, architecture="relu")).eval()
    tokens = torch.randint(2, 20, (11, 10), generator=torch.Generator().manual_seed(1))
    site = Site(model=lm.name, hook=f"blocks.{LAYER}.hook_resid_post", scale=SCALE, skip_first=1)
    return lm, hf, sae, tokens, site


@pytest.fixture(scope="module")
def dash(setup):
    lm, _, sae, tokens, site = setup
    return compute_dashboard(sae, lm, tokens, site, [0, 4, 7, 9], CFG, progress=False)


@pytest.fixture(scope="module")
def reference(setup):
    """Codes ``[n_seq, n_ctx, d_sae]`` from the HF model's hidden states (not the bridge)."""
    _, hf, sae, tokens, site = setup
    with torch.no_grad():
        x = hf(tokens, output_hidden_states=True).hidden_states[LAYER + 1]
        f = sae.encode(x.reshape(-1, x.shape[-1]) * SCALE).reshape(*tokens.shape, -1)
    f[:, : site.skip_first] = 0
    return f


def test_density_and_top_k_match_the_model_and_brute_force(dash, reference):
    flat = reference.reshape(-1, reference.shape[-1])
    assert torch.equal(dash.fire_count, (flat > 0).sum(0))
    assert int(dash.n_counted) == 11 * 9  # the skipped first positions not counted
    assert torch.equal(dash.hist.sum(1), dash.fire_count)
    best = flat.sort(dim=0, descending=True, stable=True)
    top = best.values[: CFG.n_top].T
    torch.testing.assert_close(dash.top_vals, top, rtol=1e-5, atol=1e-6)
    found = dash.top_index >= 0
    assert torch.equal(found, top > 0)
    got = flat.gather(0, dash.top_index.clamp_min(0).T).T  # codes at the reported tokens
    torch.testing.assert_close(got[found], dash.top_vals[found], rtol=1e-5, atol=1e-6)


def check_windows(dash, tokens, reference, index, win_tokens, win_acts, row):
    n_ctx, w = tokens.shape[1], CFG.window
    latent = int(dash.latents[row])
    for i, toks, acts in zip(index.tolist(), win_tokens, win_acts, strict=True):
        if i < 0:
            continue
        seq, pos = divmod(i, n_ctx)
        for j, p in enumerate(range(pos - w, pos + w + 1)):
            inside = 0 <= p < n_ctx
            assert toks[j] == (tokens[seq, p] if inside else -1)
            want = reference[seq, p, latent].item() if inside else 0.0
            assert acts[j].item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_windows_are_the_right_tokens_and_activations(setup, dash, reference):
    tokens = setup[3]
    for row, latent in enumerate(dash.latents.tolist()):
        index = dash.top_index[latent]
        check_windows(dash, tokens, reference, index, dash.top_tokens[row], dash.top_acts[row], row)
        g_index = dash.group_index[row].flatten()
        g_tok = dash.group_tokens[row].flatten(0, 1)
        g_act = dash.group_acts[row].flatten(0, 1)
        check_windows(dash, tokens, reference, g_index, g_tok, g_act, row)


def test_quantile_groups_draw_from_their_range(dash, reference):
    flat = reference.reshape(-1, reference.shape[-1])
    for row, latent in enumerate(dash.latents.tolist()):
        bounds = dash.group_bounds[row]
        firings = flat[:, latent][flat[:, latent] > 0].double()
        if len(firings) <= CFG.reservoir:  # then the reservoir holds them all: exact quantiles
            want = torch.quantile(firings, torch.linspace(0, 1, CFG.n_groups + 1).double())
            torch.testing.assert_close(bounds, want, rtol=1e-5, atol=1e-7)
        for g in range(CFG.n_groups):
            index, vals = dash.group_index[row, g], dash.group_vals[row, g]
            for i, v in zip(index.tolist(), vals.tolist(), strict=True):
                if i < 0:
                    continue
                assert bounds[g] - 1e-7 <= v <= bounds[g + 1] + 1e-7
                assert flat[i, latent].item() == pytest.approx(v, rel=1e-5, abs=1e-6)
            picked = index[index >= 0]
            assert len(set(picked.tolist())) == len(picked)
    assert (dash.group_index >= 0).any()


def test_promoted_tokens_equal_a_float64_computation_from_the_hf_weights(setup, dash):
    _, hf, sae, _, _ = setup
    g = hf.model.norm.weight.detach().double()
    W_U = hf.lm_head.weight.detach().double()  # [vocab, d_model]
    eff = (sae.W_dec[dash.latents].detach().double() / SCALE * g) @ W_U.T
    top = eff.topk(CFG.n_promoted, dim=1)
    bottom = eff.topk(CFG.n_promoted, dim=1, largest=False)
    assert torch.equal(dash.promoted_ids, top.indices)
    assert torch.equal(dash.suppressed_ids, bottom.indices)
    torch.testing.assert_close(dash.promoted_vals, top.values, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dash.suppressed_vals, bottom.values, rtol=1e-12, atol=1e-12)


def test_nearest_latents_by_decoder_cosine(setup, dash):
    W = setup[2].W_dec.detach().double()
    cos = (W / W.norm(dim=1, keepdim=True)) @ (W / W.norm(dim=1, keepdim=True)).T
    for row, latent in enumerate(dash.latents.tolist()):
        cos[latent, latent] = -math.inf
        assert dash.nearest_ids[row].tolist() == cos[latent].topk(CFG.n_nearest).indices.tolist()


def test_save_and_load_round_trip(dash, tmp_path):
    loaded = Dashboard.load(dash.save(tmp_path / "d"))
    assert loaded.meta == dash.meta
    for name, value in vars(dash).items():
        if name != "meta":
            assert torch.equal(getattr(loaded, name), value), name
    (tmp_path / "d" / "dashboard.safetensors").unlink()
    with pytest.raises(ValueError, match="dashboard.safetensors: file not found"):
        Dashboard.load(tmp_path / "d")


def test_an_interrupted_pass_resumes_to_the_same_result(setup, dash, tmp_path, monkeypatch):
    lm, _, sae, tokens, site = setup
    ckpt = tmp_path / "state.safetensors"
    real, calls = dashboard_pass._codes, []

    def dies_at_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(dashboard_pass, "_codes", dies_at_third)
    with pytest.raises(KeyboardInterrupt):
        compute_dashboard(sae, lm, tokens, site, [0, 4, 7, 9], CFG, ckpt, progress=False)
    assert ckpt.is_file()
    calls.clear()
    monkeypatch.setattr(dashboard_pass, "_codes", lambda *a: calls.append(1) or real(*a))
    resumed = compute_dashboard(sae, lm, tokens, site, [0, 4, 7, 9], CFG, ckpt, progress=False)
    examples = torch.cat([dash.top_index[dash.latents], dash.group_index.flatten(1)], 1)
    n_seqs = len((examples[examples >= 0] // tokens.shape[1]).unique())
    window_batches = -(-n_seqs // CFG.batch_size)
    assert len(calls) == 2 + window_batches  # batches 2 and 3 of 4: it resumed, not restarted
    for name, value in vars(dash).items():
        if name != "meta":
            assert torch.equal(getattr(resumed, name), value), name
    save_file({"x": torch.zeros(1)}, tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match="foreign.safetensors is not a dashboard checkpoint"):
        compute_dashboard(sae, lm, tokens, site, [0], CFG, tmp_path / "foreign.safetensors")
    other = DashboardConfig(**{**vars(CFG), "seed": 5})
    with pytest.raises(ValueError, match="other settings \\(different config\\)"):
        compute_dashboard(sae, lm, tokens, site, [0], other, ckpt, progress=False)


# -- HTML ----------------------------------------------------------------------------------
class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.srcs, self.on = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if "src" in attrs:
            self.srcs.append(attrs["src"])
        if "on" in attrs.get("class", "").split():
            self.on.append(attrs.get("style", ""))


@pytest.fixture()
def hostile(dash):
    """The dashboard with two tokens' text replaced by markup and whitespace."""
    meta = dict(dash.meta, token_text=dict(dash.meta["token_text"]))
    centre = int(dash.top_tokens[0, 0, CFG.window])
    meta["token_text"][str(centre)] = "<script>alert(1)</script>"
    other = next(int(t) for t in dash.top_tokens[0, 0] if t >= 0 and t != centre)
    meta["token_text"][str(other)] = "\n\t"
    return Dashboard(meta, **{k: v for k, v in vars(dash).items() if k != "meta"})


def test_html_pages_escape_tokens_link_and_highlight(hostile, tmp_path):
    folder = write_site(hostile, tmp_path / "html")
    pages = sorted(p.name for p in folder.iterdir())
    assert pages == sorted(["index.html"] + [page_name(i) for i in hostile.latents.tolist()])
    for page in folder.iterdir():
        html = page.read_text()
        assert "<script>" not in html and "http://" not in html and "https://" not in html
        parser = Links()
        parser.feed(html)
        assert parser.srcs == []  # nothing loaded from elsewhere
        for href in parser.hrefs:
            assert (folder / href).is_file(), f"{page.name} links to missing {href}"
        for style in parser.on:  # a firing token: an opaque-enough background
            assert float(re.fullmatch(r"--a: ([0-9.]+)", style).group(1)) >= 0.2
    first = (folder / page_name(int(hostile.latents[0]))).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in first
    assert "↵⇥" in first
    n_firing = int((hostile.top_acts[0] > 0).sum())
    parser = Links()
    parser.feed(first.split("<h3>Quantile groups</h3>")[0])
    assert len(parser.on) == n_firing > 0


def test_highlight_colour_is_set_for_light_and_dark_themes(hostile):
    html = latent_fragment(hostile, int(hostile.latents[1]))
    assert html.startswith("<style>") and "<html" not in html and "<body" not in html
    css = html.split("</style>")[0]
    assert ".tok.on { background-color: rgb(var(--hl) / var(--a)); }" in css
    light = re.search(r"^\.saelib-dash \{(.*?)\}", css, re.S | re.M).group(1)
    dark = re.search(r"prefers-color-scheme: dark\) \{\s*\.saelib-dash \{(.*?)\}", css, re.S)
    for block in (light, dark.group(1)):
        hl = [int(c) for c in re.search(r"--hl: (\d+) (\d+) (\d+);", block).groups()]
        bg = re.search(r"--bg: #([0-9a-f]{6});", block).group(1)
        bg = [int(bg[i : i + 2], 16) for i in (0, 2, 4)]
        # at the smallest opacity the highlight still differs from the page by >= 30 levels
        assert max(abs(0.2 * h + 0.8 * b - b) for h, b in zip(hl, bg, strict=True)) >= 30


# -- bad input -----------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(setup, dash):
    lm, _, sae, tokens, site = setup

    def run(**kw):
        args = dict(sae=sae, lm=lm, tokens=tokens, site=site, latents=[0], config=CFG)
        args.update(kw)
        compute_dashboard(**args, progress=False)

    with pytest.raises(ValueError, match="tokens must be a non-empty long tensor"):
        run(tokens=tokens.float())
    with pytest.raises(ValueError, match=r"tokens must be in \[0, 64\)"):
        run(tokens=tokens + 100)
    with pytest.raises(ValueError, match=r"latents must be a non-empty list .* in \[0, 12\)"):
        run(latents=[12])
    with pytest.raises(ValueError, match="latents must be"):
        run(latents=[1, 1])
    with pytest.raises(ValueError, match="site.model must be the model's name"):
        run(site=Site(model="gpt2", hook=site.hook, scale=1.0))
    with pytest.raises(ValueError, match="site.hook must be a hook of tiny-llama"):
        run(site=Site(model=lm.name, hook="blocks.9.hook_resid_post", scale=1.0))
    wide = make_sae(SAEConfig(d_in=16, d_sae=4, architecture="relu"))
    with pytest.raises(ValueError, match="sae must be d_in == the model's d_model 32"):
        run(sae=wide)
    with pytest.raises(ValueError, match="DashboardConfig.n_promoted must be <= the vocabulary"):
        run(config=DashboardConfig(n_promoted=65))
    with pytest.raises(ValueError, match="config must be a DashboardConfig"):
        run(config={"n_top": 3})
    with pytest.raises(ValueError, match=r"DashboardConfig.reservoir must be an integer >= 50"):
        DashboardConfig(reservoir=10)
    with pytest.raises(ValueError, match="DashboardConfig.hist_high must be a number > 0.5"):
        DashboardConfig(hist_low=0.5, hist_high=0.1)
    with pytest.raises(ValueError, match=r"latent must be one of the selected \[0, 4, 7, 9\]"):
        latent_fragment(dash, 1)


def test_gpt2_layer_norm_is_centred_in_the_promoted_tokens(tiny_lm, one_thread):
    """A GPT-2 (LayerNorm, learned position embeddings) through the same code: the promoted
    tokens centre the direction before the norm's weight, and the top-k matches HF."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from saelib.lm.model import wrap

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16))
    with torch.no_grad():
        hf.transformer.ln_f.weight.uniform_(0.5, 1.5)  # not all ones: the weight matters
    lm = wrap("tiny-gpt2", hf.eval(), tiny_lm[0].tokenizer)
    sae = make_sae(SAEConfig(d_in=32, d_sae=10, architecture="topk", k=3)).eval()
    tokens = torch.randint(2, 20, (5, 8), generator=torch.Generator().manual_seed(2))
    site = Site(model=lm.name, hook="blocks.0.hook_resid_post", scale=2.0)
    dash = compute_dashboard(sae, lm, tokens, site, [1, 6], CFG, progress=False)
    d = sae.W_dec[[1, 6]].detach().double() / 2.0
    d = (d - d.mean(-1, keepdim=True)) * hf.transformer.ln_f.weight.detach().double()
    eff = d @ hf.lm_head.weight.detach().double().T
    assert torch.equal(dash.promoted_ids, eff.topk(CFG.n_promoted, dim=1).indices)
    assert torch.equal(dash.suppressed_ids, eff.topk(CFG.n_promoted, dim=1, largest=False).indices)
    with torch.no_grad():
        x = hf(tokens, output_hidden_states=True).hidden_states[1]
        f = sae.encode(x.reshape(-1, 32) * 2.0)
    top = f.sort(dim=0, descending=True, stable=True).values[: CFG.n_top].T
    torch.testing.assert_close(dash.top_vals, top, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "pythia"])
def test_folder_models_run_the_dashboard(arch, tiny_hf_folder, one_thread):
    """GPT-2 and Pythia (GPT-NeoX) loaded from local folders, as the paper presets would:
    the top activations equal the SAE on HF's own hidden states, and the promoted tokens
    the LayerNorm-centred direction through the final norm's weight and the unembedding."""
    from tiny_models import hf_final_norm

    from saelib.lm.model import load_model

    lm = load_model(str(tiny_hf_folder(arch)))
    hf = lm.bridge.original_model
    d_model = lm.d_model
    sae = make_sae(SAEConfig(d_in=d_model, d_sae=12, architecture="topk", k=3)).eval()
    tokens = torch.randint(1, 200, (5, 8), generator=torch.Generator().manual_seed(3))
    site = Site(model=lm.name, hook="blocks.0.hook_resid_post", scale=1.5)
    dash = compute_dashboard(sae, lm, tokens, site, [2, 7], CFG, progress=False)
    with torch.no_grad():
        x = hf(tokens, output_hidden_states=True).hidden_states[1]
        f = sae.encode(x.reshape(-1, d_model) * 1.5)
    top = f.sort(dim=0, descending=True, stable=True).values[: CFG.n_top].T
    torch.testing.assert_close(dash.top_vals, top, rtol=1e-5, atol=1e-6)
    d = sae.W_dec[[2, 7]].detach().double() / 1.5
    d = (d - d.mean(-1, keepdim=True)) * hf_final_norm(hf).weight.detach().double()
    eff = d @ hf.get_output_embeddings().weight.detach().double().T
    assert torch.equal(dash.promoted_ids, eff.topk(CFG.n_promoted, dim=1).indices)
