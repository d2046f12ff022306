"""Probes: the group-wise split, pooling, dense/PCA/k-sparse probes and the quiver."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from saelib.lm.site import Site
from saelib.probing import probes
from saelib.probing.pooling import pool, token_mask


def _grouped_labels(n_groups=60, per_group=10, seed=0):
    rng = np.random.default_rng(seed)
    group_label = rng.integers(0, 2, n_groups)
    groups = np.repeat([f"g{i}" for i in range(n_groups)], per_group)
    y = np.repeat(group_label, per_group)
    return y, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_split_keeps_groups_apart_and_classes_balanced(seed):
    y, groups = _grouped_labels(seed=seed)
    train, val, test = probes.group_split(y, groups, seed=seed)
    assert len(train) + len(val) + len(test) == len(y)
    assert len(np.unique(np.concatenate([train, val, test]))) == len(y)
    sets = [set(groups[idx]) for idx in (train, val, test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    for idx, frac in ((train, 0.6), (val, 0.2), (test, 0.2)):
        assert abs(len(idx) / len(y) - frac) < 0.1
        assert abs(y[idx].mean() - y.mean()) < 0.15  # stratified


def test_group_split_is_seeded():
    y, groups = _grouped_labels()
    a = probes.group_split(y, groups, seed=3)
    b = probes.group_split(y, groups, seed=3)
    c = probes.group_split(y, groups, seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[2], c[2])


def test_group_split_errors():
    y, groups = _grouped_labels(n_groups=6)
    with pytest.raises(
        ValueError, match=r"groups \(per class 0, 1\) must be at least n_folds=5 in each class"
    ):
        probes.group_split(y, groups)
    y, groups = _grouped_labels()
    with pytest.raises(
        ValueError, match=r"groups \(entries\) must be one per label \(600\), got 599"
    ):
        probes.group_split(y, groups[:-1])
    with pytest.raises(ValueError, match=r"y \(values\) must be 0 or 1, got \[1, 2\]"):
        probes.group_split(y + 1, groups)
    with pytest.raises(ValueError, match="n_folds must be an integer >= 3, got 2"):
        probes.group_split(y, groups, n_folds=2)


def test_pool_last_and_mean_against_loops():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(4, 6, 3))
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6, [0, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]])
    last, mean = pool(acts, mask, "last"), pool(acts, mask, "mean")
    for i in range(4):
        on = np.flatnonzero(mask[i])
        np.testing.assert_allclose(last[i], acts[i, on[-1]])
        np.testing.assert_allclose(mean[i], acts[i, on].mean(0))
    assert isinstance(last, np.ndarray) and last.dtype == np.float64
    t = pool(torch.from_numpy(acts).float(), torch.from_numpy(mask), "mean")
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), mean, rtol=1e-5)


def test_pool_errors():
    acts, mask = np.zeros((2, 3, 4)), np.ones((2, 3))
    with pytest.raises(ValueError, match=r"how must be one of \['last', 'mean'\], got 'max'"):
        pool(acts, mask, "max")
    with pytest.raises(ValueError, match=r"keep must be of shape \(2, 3\), got \(2, 4\)"):
        pool(acts, np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"keep \(tokens per row\) must be at least 1 in every"):
        pool(acts, np.array([[1, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"acts must be of shape \[n, T, d\], got \(2, 3\)"):
        pool(np.zeros((2, 3)), mask)


def test_token_mask_skips_first_and_outliers_but_never_empties_a_text():
    acts = torch.ones(3, 4, 2)
    acts[0, 2] = 100.0  # an outlier inside the first text
    acts[2, 1] = 100.0  # the only token after the first of a two-token text
    lengths = torch.tensor([4, 1, 2])
    site = Site("m", "blocks.0.hook_resid_post", scale=1.0, max_norm=10.0, skip_first=1)
    keep = token_mask(acts, lengths, site)
    expected = [[0, 1, 0, 1], [1, 0, 0, 0], [1, 1, 0, 0]]  # rows 1, 2: all real tokens kept
    assert keep.tolist() == [[bool(v) for v in row] for row in expected]
    no_limit = token_mask(acts, lengths, Site("m", "blocks.0.hook_resid_post", 1.0, None, 0))
    assert no_limit.tolist() == (torch.arange(4)[None] < lengths[:, None]).tolist()


def _planted_codes(n=600, d_sae=256, latent=37, seed=0):
    """Sparse non-negative codes; the label is whether latent ``latent`` fires."""
    rng = np.random.default_rng(seed)
    f = rng.exponential(size=(n, d_sae)) * (rng.random((n, d_sae)) < 0.1)
    y = (rng.random(n) < 0.5).astype(int)
    f[:, latent] = y * (1.0 + rng.exponential(size=n))
    return f, y


def test_k1_sparse_probe_finds_the_planted_latent():
    f, y = _planted_codes()
    assert probes.rank_latents(f[:400], y[:400])[0] == 37
    fits = probes.sparse_probes(f[:400], y[:400], f[400:500], y[400:500], ks=(1, 4, 512))
    assert [p.method for p in fits] == ["sae_k1", "sae_k4"]  # 512 > d_sae is dropped
    assert list(fits[0].features) == [37]
    assert fits[0].evaluate(f[500:], y[500:])["auc"] > 0.99


def test_rank_latents_matches_a_loop_and_breaks_ties_by_index():
    rng = np.random.default_rng(1)
    f, y = rng.normal(size=(50, 8)), np.tile([0, 1], 25)
    f[:, 5] = f[:, 2]  # a tie: 2 must come before 5
    ref = [abs(f[y == 1, j].mean() - f[y == 0, j].mean()) for j in range(8)]
    order = probes.rank_latents(f, y)
    np.testing.assert_allclose(np.array(ref)[order], sorted(ref, reverse=True))
    assert list(order).index(2) < list(order).index(5)


def test_dense_probe_recovers_a_random_direction_like_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 20))
    w = rng.normal(size=20)
    y = (x @ w > 0).astype(int)
    fit = probes.dense_probe(x[:600], y[:600], x[600:750], y[600:750], Cs=(1.0,))
    assert fit.evaluate(x[750:], y[750:])["auc"] > 0.99
    # the same model as scikit-learn's on standardised inputs
    scaler = StandardScaler().fit(x[:600])
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(x[:600]), y[:600])
    np.testing.assert_allclose(
        fit.scores(x[750:]), ref.decision_function(scaler.transform(x[750:])), rtol=1e-4
    )
    # and its direction in input space is the planted one
    direction = ref.coef_[0] / scaler.scale_
    assert direction @ w / np.linalg.norm(direction) / np.linalg.norm(w) > 0.95


def test_c_is_chosen_on_validation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 50))
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    fits = {
        c: probes.dense_probe(x[:100], y[:100], x[100:200], y[100:200], Cs=(c,))
        for c in (1e-3, 1e-1, 10.0)
    }
    best = probes.dense_probe(x[:100], y[:100], x[100:200], y[100:200], Cs=(1e-3, 1e-1, 10.0))
    assert best.val_auc == max(p.val_auc for p in fits.values())
    assert best.C == max(fits, key=lambda c: (fits[c].val_auc, -c))


def test_pca_probe_and_its_errors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 10)) * np.linspace(3, 0.1, 10)
    y = (x[:, 0] > 0).astype(int)
    fit = probes.pca_probe(x[:200], y[:200], x[200:250], y[200:250], n_components=2)
    assert fit.method == "pca2" and fit.evaluate(x[250:], y[250:])["auc"] > 0.95
    with pytest.raises(ValueError, match=r"n_components must be an integer in \[1, 10\], got 11"):
        probes.pca_probe(x[:200], y[:200], x[200:250], y[200:250], n_components=11)


def test_probe_errors_name_the_parameter():
    x, y = np.zeros((10, 3)), np.tile([0, 1], 5)
    with pytest.raises(ValueError, match=r"x_val \(columns\) must be 3 like x_train, got 4"):
        probes.dense_probe(x, y, np.zeros((10, 4)), y)
    with pytest.raises(ValueError, match=r"y_train \(classes\) must be both 0 and 1, got \[0\]"):
        probes.dense_probe(x, np.zeros(10, int), x, y)
    with pytest.raises(ValueError, match=r"y_val \(labels\) must be one per row \(10\), got 9"):
        probes.dense_probe(x, y, x, y[:-1])
    with pytest.raises(
        ValueError, match=r"Cs must be a non-empty sequence of positive numbers, got \(\)"
    ):
        probes.dense_probe(x, y, x, y, Cs=())
    with pytest.raises(
        ValueError, match=r"ks must be a non-empty sequence of positive integers, got \(0,\)"
    ):
        probes.sparse_probes(x, y, x, y, ks=(0,))
    with pytest.raises(ValueError, match="x_train must be finite, got"):
        probes.dense_probe(np.full((10, 3), np.nan), y, x, y)


def test_quiver_picks_the_validation_best_and_can_leave_out_sae():
    rows = [
        {"method": "dense", "val_auc": 0.80, "test_auc": 0.70},
        {"method": "pca32", "val_auc": 0.85, "test_auc": 0.90},
        {"method": "sae_k4", "val_auc": 0.90, "test_auc": 0.60},
        {"method": "sae_k8", "val_auc": 0.90, "test_auc": 0.95},
    ]
    assert probes.quiver(rows)["method"] == "sae_k4"  # judged on val; ties: first
    assert probes.quiver(rows, with_sae=False)["method"] == "pca32"
    with pytest.raises(
        ValueError,
        match=r"rows \(candidates\) must be at least one method that is not an SAE probe",
    ):
        probes.quiver(rows[2:], with_sae=False)


def test_probe_task_end_to_end_sae_wins_when_only_the_codes_know():
    f, y = _planted_codes(n=800)
    groups = np.arange(800) // 8
    x = np.random.default_rng(5).normal(size=(800, 16))  # activations without the signal
    rows = probes.probe_task(x, y, groups, f=f, ks=(1, 2), Cs=(0.1, 1.0), n_components=4)
    assert [r["method"] for r in rows] == ["dense", "pca4", "sae_k1", "sae_k2"]
    assert probes.quiver(rows)["method"].startswith("sae_k")
    assert probes.quiver(rows)["test_auc"] > 0.99
    assert probes.quiver(rows, with_sae=False)["test_auc"] < 0.7


def test_the_chapter_schema_allows_exactly_the_poolings():
    from saelib.parameters import chapter_schema
    from saelib.probing.pooling import POOLINGS

    choices = chapter_schema("06_probing")["parameters"]["scarce_pooling"]["choices"]
    assert tuple(choices) == POOLINGS
