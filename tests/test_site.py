"""The site record: validation, round trip with the SAE's files, input preparation."""

import json

import pytest
import torch

from saelib.lm.site import SITE_FILE, Site, load_trained, save_trained
from saelib.saes import SAEConfig, make_sae


def _site(**kw):
    base = dict(model="m", hook="blocks.3.hook_resid_post", scale=2.0, max_norm=5.0, skip_first=1)
    return Site(**(base | kw))


def test_round_trip_keeps_weights_and_site(tmp_path):
    sae = make_sae(SAEConfig(d_in=6, d_sae=12, architecture="topk", k=2))
    site = _site()
    save_trained(sae, site, tmp_path / "sae")
    loaded, loaded_site = load_trained(tmp_path / "sae")
    assert loaded_site == site and loaded_site.layer == 3
    x = torch.randn(5, 6)
    assert torch.equal(loaded.encode(site.prepare(x)), sae.eval().encode(x * 2.0))
    assert not loaded.training


def test_keeps_and_prepare():
    x = torch.tensor([[3.0, 4.0], [30.0, 40.0]])  # norms 5 and 50
    assert _site().keeps(x).tolist() == [True, False]
    assert _site(max_norm=None).keeps(x).tolist() == [True, True]
    assert torch.equal(_site().prepare(x), 2 * x)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(scale=0.0), "Site.scale must be a number > 0, got 0.0"),
        (dict(max_norm=-1.0), "Site.max_norm must be a number > 0"),
        (dict(skip_first=-1), "Site.skip_first must be an integer >= 0"),
        (dict(hook="embed"), "hook"),
    ],
)
def test_bad_values_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        _site(**kw)


def test_missing_or_broken_site_file(tmp_path):
    from saelib.io import save_sae

    sae = make_sae(SAEConfig(d_in=4, d_sae=8, architecture="relu"))
    save_sae(sae, tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="no site record"):
        load_trained(tmp_path / "plain")
    (tmp_path / "plain" / SITE_FILE).write_text(json.dumps({"model": "m"}))
    with pytest.raises(ValueError, match="not a site record"):
        load_trained(tmp_path / "plain")
