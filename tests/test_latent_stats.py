"""Tests for saelib.lm.latent_stats and the effects of saelib.lm.latent_survey: token purity,
the latent table and the selection rules on hand-built dashboards, effects by hand."""

import math

import pandas as pd
import pytest
import torch

from saelib.lm.dashboard import Dashboard
from saelib.lm.latent_stats import example_tokens, latent_table, pick_latents, token_purity
from saelib.lm.latent_survey import effects
from saelib.parameters import chapter_claims


def test_example_tokens_reads_flat_positions_and_keeps_empty_slots():
    tokens = torch.tensor([[10, 11, 12], [20, 21, 22]])
    index = torch.tensor([[0, 5, -1], [4, 2, 3]])
    assert example_tokens(index, tokens).tolist() == [[10, 22, -1], [21, 12, 20]]


def test_token_purity_by_hand():
    ids = torch.tensor([[7, 7, 7, 3], [1, 2, 3, 4], [5, 5, 9, 9], [-1, -1, -1, -1], [4, -1, 4, 2]])
    purity, top = token_purity(ids)
    assert purity.tolist() == pytest.approx([0.75, 0.25, 0.5, 0.0, 2 / 3])
    assert top.tolist() == [7, 1, 5, -1, 4]  # ties go to the smaller id


def dashboard(tokens, top_index, group_index, fire_count, promoted):
    """A Dashboard with only the fields latent_table reads filled in meaningfully."""
    n_lat, n_top = top_index.shape
    n_seq, n_ctx = tokens.shape
    z = torch.zeros
    return Dashboard(
        meta={"n_seq": n_seq, "n_ctx": n_ctx},
        fire_count=fire_count, n_counted=torch.tensor(100), hist=z(n_lat, 2, dtype=torch.long),
        edges=z(3, dtype=torch.float64), top_vals=z(n_lat, n_top), top_index=top_index,
        latents=torch.arange(n_lat), top_tokens=z(n_lat, n_top, 1, dtype=torch.long),
        top_acts=z(n_lat, n_top, 1), group_bounds=z(n_lat, 2),
        group_index=group_index.unsqueeze(1), group_vals=z(n_lat, 1, group_index.shape[1]),
        group_tokens=z(n_lat, 1, group_index.shape[1], 1, dtype=torch.long),
        group_acts=z(n_lat, 1, group_index.shape[1], 1), promoted_ids=promoted,
        promoted_vals=z(promoted.shape, dtype=torch.float64), suppressed_ids=promoted,
        suppressed_vals=z(promoted.shape, dtype=torch.float64),
        nearest_ids=z(n_lat, 1, dtype=torch.long), nearest_cos=z(n_lat, 1),
    )  # fmt: skip


def test_latent_table_by_hand():
    tokens = torch.tensor([[5, 6, 5, 7], [5, 8, 9, 5]])  # flat: 5 6 5 7 5 8 9 5
    top_index = torch.tensor([[0, 2, 4, 7], [1, 3, 5, 6], [0, 1, -1, -1]])
    group_index = torch.tensor([[0, 1, 3, 5], [1, 1, 3, 3], [-1, -1, -1, -1]])
    fire_count = torch.tensor([30, 10, 2])
    promoted = torch.tensor([[5, 1], [2, 3], [6, 0]])
    dash = dashboard(tokens, top_index, group_index, fire_count, promoted)
    table = latent_table(dash, tokens, min_firings=10)
    assert table["live"].tolist() == [True, True, False]
    assert table["density"].tolist() == pytest.approx([0.3, 0.1, 0.02])
    # latent 0: top tokens 5 5 5 5 -> purity 1, token 5; groups 5 6 7 8 -> 0.25
    # latent 1: top tokens 6 7 8 9 -> 0.25, token 6; groups 6 6 7 7 -> 0.5
    # latent 2: top tokens 5 6 -> 0.5, token 5; no group examples -> 0
    assert table["purity_top"].tolist() == pytest.approx([1.0, 0.25, 0.5])
    assert table["purity_groups"].tolist() == pytest.approx([0.25, 0.5, 0.0])
    assert table["top_token"].tolist() == [5, 6, 5]
    assert table["promotes_top_token"].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="tokens"):
        latent_table(dash, tokens[:1], min_firings=10)


def test_effects_by_hand_match_the_declared_claims():
    one = pd.DataFrame({"live": [True, True, True, False], "purity_top": [1.0, 0.5, 0.2, 1.0],
                        "purity_groups": [0.5, 0.5, 0.1, 0.0],
                        "promotes_top_token": [True, False, False, True]})  # fmt: skip
    two = one.assign(live=[True, False, False, False])
    out = effects([one, two])
    assert set(out) == {c.id for c in chapter_claims("07_latent_dashboards")}
    assert out["token_latents"] == pytest.approx([2 / 3, 1.0])
    assert out["top_overstates_purity"] == pytest.approx([(0.5 + 0.0 + 0.1) / 3, 0.5])
    assert out["few_copy_latents"] == pytest.approx([1 / 3, 1.0])
    assert all(math.isfinite(v) for vs in out.values() for v in vs)


def test_pick_latents_follows_its_rules_without_repeats():
    table = pd.DataFrame({"density": [0.5, 0.4, 0.01, 0.02, 0.3, 0.0],
                          "live": [True, True, True, True, True, False],
                          "purity_top": [0.1, 0.9, 0.5, 0.3, 1.0, 1.0]})  # fmt: skip
    picked = pick_latents(table, 1, seed=0)
    assert list(picked) == ["most frequent", "random", "rarest live", "purest", "least pure"]
    assert picked["most frequent"] == [0]
    chosen = [i for ids in picked.values() for i in ids]
    assert len(chosen) == len(set(chosen)) and 5 not in chosen  # never the dead latent
    assert picked["rarest live"][0] in (2, 3)
    if picked["random"] != [4]:
        assert picked["purest"] == [4]
