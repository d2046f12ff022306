"""The site record: validation, round trip with the SAE's files, input preparation."""

import json

import pytest
import torch

from saelib.lm.site import (
    SITE_FILE,
    Site,
    activation_scale,
    load_trained,
    norm_limit,
    save_trained,
)
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


def test_activation_scale_gives_mean_square_norm_d_in():
    x = torch.randn(500, 8) * 7 + 3
    s = activation_scale(x)
    assert (s * x).pow(2).sum(-1).mean().item() == pytest.approx(8, rel=1e-5)
    assert activation_scale(torch.full((4, 4), 0.5)) == pytest.approx(2.0)  # ||x||^2 = 1
    with pytest.raises(ValueError, match="all zeros"):
        activation_scale(torch.zeros(3, 2))


def test_norm_limit_is_a_multiple_of_the_median_norm():
    x = torch.ones(9, 4)  # norm 2
    x[3] *= 100
    assert norm_limit(x, 10.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="ratio must be a number > 0, got 0"):
        norm_limit(x, 0)


def test_measure_leaves_outliers_out_of_the_scale():
    x = torch.full((9, 4), 0.5)  # norm 1
    x[3] *= 100
    site = Site.measure("m", "blocks.2.hook_resid_post", x, skip_first=1, outlier_ratio=10.0)
    assert (site.max_norm, site.skip_first, site.layer) == (10.0, 1, 2)
    assert site.scale == pytest.approx(2.0)  # the outlier does not count
    assert Site.measure("m", "blocks.2.hook_resid_post", x).max_norm is None
    assert Site.measure("m", "blocks.2.hook_resid_post", x).scale < 0.1


def test_inliers_restore_and_raw_reconstruction():
    x = torch.tensor([[3.0, 4.0], [30.0, 40.0]])  # norms 5 and 50
    site = _site()  # scale 2, max_norm 5
    assert torch.equal(site.inliers(x), x[:1])
    assert _site(max_norm=None).inliers(x) is x
    assert torch.equal(site.restore(site.prepare(x)), x)
    seen = []

    def code(z):  # halves its input, in the SAE's unit
        seen.append(z)
        return z / 2

    out = site.raw_reconstruction(code)(x)
    assert torch.equal(seen[0], 2 * x)
    assert torch.equal(out, torch.tensor([[1.5, 2.0], [30.0, 40.0]]))  # the outlier passes
    out = _site(max_norm=None).raw_reconstruction(code)(x)
    assert torch.equal(out, x / 2)
