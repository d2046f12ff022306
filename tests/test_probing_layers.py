"""Probing at many layers: pooled features against a hand-made forward, probes, protocols."""

import numpy as np
import pandas as pd
import pytest
import torch

from saelib.lm.model import resid_hook
from saelib.lm.site import Site
from saelib.probing.layers import pooled_features, probe_layers, scarce_probes
from saelib.probing.probes import group_split
from saelib.probing.protocols import choose_fixed_layer, quivers
from saelib.probing.tasks import ProbingTask
from saelib.saes import SAEConfig, make_sae

TEXTS = [
    "the cat sat on a mat",
    "a dog ran to the big red house by the sea",
    "old town",
    "the cat ran",
    "a big dog sat on the old mat in the town by the sea and the cat ran",
]


def _site(lm, hook, scale=1.0, max_norm=None, skip_first=1):
    return Site(lm.name, hook, scale, max_norm, skip_first)


def test_pooled_features_match_one_text_at_a_time(tiny_lm):
    lm, hf = tiny_lm
    hooks = [resid_hook(0), resid_hook(1)]  # not the last block: HF's last state is normed
    sae = make_sae(SAEConfig(d_in=32, d_sae=16, architecture="topk", k=3))
    sites = [_site(lm, hooks[0]), _site(lm, hooks[1], scale=2.0)]
    feats = pooled_features(
        lm, TEXTS, sites, {hooks[1]: sae}, max_tokens=8, batch_size=2, progress=False
    )
    assert set(feats) == {(h, p) for h in hooks for p in ("last", "mean")}
    assert "f" not in feats[(hooks[0], "last")]
    for i, text in enumerate(TEXTS):
        ids = torch.tensor([lm.tokenize([text])[0][:8]])
        with torch.no_grad():  # HF hidden_states[L + 1] is the output of block L
            states = hf(ids, output_hidden_states=True).hidden_states
        for hook, layer in zip(hooks, (0, 1), strict=True):
            a = states[layer + 1][0]  # [T, d]
            torch.testing.assert_close(feats[(hook, "last")]["x"][i], a[-1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(
                feats[(hook, "mean")]["x"][i], a[1:].mean(0), atol=1e-5, rtol=1e-5
            )
        with torch.no_grad():
            f = sae.encode(states[2][0] * 2.0)
        torch.testing.assert_close(
            feats[(hooks[1], "mean")]["f"][i], f[1:].mean(0), atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(feats[(hooks[1], "last")]["f"][i], f[-1], atol=1e-5, rtol=1e-5)


def test_pooled_features_errors(tiny_lm):
    lm, _ = tiny_lm
    site = _site(lm, resid_hook(0))
    with pytest.raises(ValueError, match="max_tokens must be an integer >= 2, got 1"):
        pooled_features(lm, TEXTS, [site], max_tokens=1)
    with pytest.raises(ValueError, match=r"texts \(indices without tokens\) must be none"):
        pooled_features(lm, [""], [site], progress=False)
    sae = make_sae(SAEConfig(d_in=32, d_sae=16, architecture="topk", k=3))
    with pytest.raises(ValueError, match=r"saes \(hooks\) must be among the sites' hooks"):
        pooled_features(lm, TEXTS, [site], {resid_hook(1): sae})
    with pytest.raises(ValueError, match=r"sites \(hooks\) must be one Site per hook"):
        pooled_features(lm, TEXTS, [site, site])
    with pytest.raises(ValueError, match=r"sites \(models\) must be the probed model"):
        pooled_features(lm, TEXTS, [Site("other", resid_hook(0), 1.0)])
    with pytest.raises(ValueError, match="sites must be at least one Site"):
        pooled_features(lm, TEXTS, [])


def test_one_token_text_and_outlier_tokens(tiny_lm):
    lm, hf = tiny_lm
    hook = resid_hook(0)
    texts = ["cat", TEXTS[1]]
    with torch.no_grad():
        states = [
            hf(torch.tensor(lm.tokenize([t])), output_hidden_states=True).hidden_states[1][0]
            for t in texts
        ]
    plain = pooled_features(lm, texts, [_site(lm, hook)], progress=False)
    # one token: nothing after skip_first, so its only token is used by both poolings
    for pooling in ("last", "mean"):
        torch.testing.assert_close(plain[(hook, pooling)]["x"][0], states[0][0])
    # tokens above max_norm are left out of both poolings
    a = states[1]
    norms = a.norm(dim=-1)
    limit = norms[1:].median().item()
    keep = (norms <= limit) & (torch.arange(len(a)) >= 1)
    cut = pooled_features(lm, texts, [_site(lm, hook, max_norm=limit)], progress=False)
    torch.testing.assert_close(cut[(hook, "mean")]["x"][1], a[keep].mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        cut[(hook, "last")]["x"][1], a[keep.nonzero().max()], atol=1e-5, rtol=1e-5
    )


def _synthetic(n=240, d=12, d_sae=20, n_groups=30, seed=0):
    """Two hooks: at 'deep' the label is a direction of x and one latent; at 'shallow', noise."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    groups = np.array([f"g{i % n_groups}" for i in range(n)])
    texts = [f"text {i}" for i in range(n)]
    feats = {}
    for hook, signal in (("blocks.1.hook_resid_post", 0.0), ("blocks.5.hook_resid_post", 3.0)):
        x = rng.normal(size=(n, d))
        x[:, 0] += signal * y
        f = np.abs(rng.normal(size=(n, d_sae))) * 0.1
        f[:, 7] += signal * y
        for pooling in ("last", "mean"):
            feats[(hook, pooling)] = {"x": torch.tensor(x).float(), "f": torch.tensor(f).float()}
    task = ProbingTask("toy", texts, y, groups)
    return task, feats, {t: i for i, t in enumerate(texts)}


def test_probe_layers_finds_the_informative_layer_and_latent():
    task, feats, index = _synthetic()
    table = probe_layers(
        [task], feats, index, ks=(1, 4), Cs=(0.1, 1.0), n_components=4, progress=False
    )
    assert len(table) == 2 * 2 * (2 + 2)  # hooks x poolings x (dense, pca, k=1, k=4)
    deep, shallow = table[table["layer"] == 5], table[table["layer"] == 1]
    assert deep["test_auc"].min() > 0.95
    assert shallow["test_auc"].max() < 0.75
    assert choose_fixed_layer(table) == 5
    q = quivers(table)
    assert set(q["protocol"]) == {"fixed layer", "per-task layer"}
    assert (q["layer"] == 5).all()
    # forcing the uninformative layer: the fixed protocol is worse, the per-task one is not
    q1 = quivers(table, fixed_layer=1).set_index(["protocol", "candidates"])["test_auc"]
    assert q1[("fixed layer", "with SAE")] < 0.75 < 0.95 < q1[("per-task layer", "with SAE")]
    with pytest.raises(ValueError, match=r"fixed_layer must be one of the probed layers \[1, 5\]"):
        quivers(table, fixed_layer=3)


def test_quiver_without_sae_never_picks_an_sae_probe():
    task, feats, index = _synthetic(seed=1)
    table = probe_layers([task], feats, index, ks=(1,), Cs=(1.0,), n_components=4, progress=False)
    q = quivers(table)
    without = q[q["candidates"] == "without SAE"]
    assert not without["method"].str.startswith("sae_").any()
    # and the quiver's choice is the validation-best candidate
    best = table[~table["method"].str.startswith("sae_")]["val_auc"].max()
    assert without[without["protocol"] == "per-task layer"]["val_auc"].iloc[0] == best


def test_scarce_probes_subsample_train_only_and_balanced():
    task, feats, index = _synthetic()
    table = scarce_probes([task], feats, index, sizes=[4, 16], n_draws=2, ks=(1,), Cs=(1.0,))
    assert set(table["n_train"]) == {4, 16}
    assert set(table["method"]) == {"dense", "sae_k1"}
    assert len(table) == 2 * 2 * 2 * 4  # sizes x draws x methods x (hooks x poolings)
    deep16 = table[(table["layer"] == 5) & (table["n_train"] == 16)]
    assert deep16["test_auc"].mean() > 0.9  # one strong latent: 16 examples suffice
    with pytest.raises(ValueError, match=r"sizes must be even integers >= 4, got \[5\]"):
        scarce_probes([task], feats, index, sizes=[5])
    with pytest.raises(ValueError, match="pooling must be one of"):
        scarce_probes([task], feats, index, sizes=[4], pooling="max")
    one = scarce_probes([task], feats, index, [4], 1, ks=(1,), Cs=(1.0,), pooling="mean")
    assert set(one["pooling"]) == {"mean"} and len(one) == 2 * 2  # hooks x methods
    # the split is the one probe_layers uses: test rows are never trained on
    train, _, test = group_split(task.labels, task.groups, seed=0)
    assert not set(train) & set(test)


def test_scarce_probes_deterministic():
    task, feats, index = _synthetic()
    a = scarce_probes(
        [task], feats, index, sizes=[8], n_draws=2, ks=(1,), Cs=(1.0,), progress=False
    )
    b = scarce_probes(
        [task], feats, index, sizes=[8], n_draws=2, ks=(1,), Cs=(1.0,), progress=False
    )
    pd.testing.assert_frame_equal(a, b)
