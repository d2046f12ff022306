"""Which tasks count, the bootstrap null of the best layers, the claims' effects, and the
pooled-feature cache: hand-computed cases and cases whose answer is known."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from saelib.claims import Interval, load, verdicts
from saelib.files import sha256_bytes
from saelib.lm.model import resid_hook
from saelib.lm.site import Site
from saelib.probing import selection as S
from saelib.probing.cache import cached_features, probe_cached
from saelib.probing.findings import claim_effects, scarce_curves
from saelib.probing.layers import pooled_features
from saelib.probing.protocols import with_family
from saelib.probing.tasks import ProbingTask
from saelib.saes import SAEConfig, make_sae


def test_gain_statistic_by_hand():
    # column means 0.7, 0.75: the common layer is 1; task 0 gains 0.9 - 0.6 = 0.3, task 1 0
    assert S.gain_statistic([[0.9, 0.6], [0.5, 0.9]]) == pytest.approx(0.15)
    assert S.gain_statistic([[0.6, 0.8], [0.7, 0.9]]) == 0.0  # one common best layer
    with pytest.raises(ValueError, match=r"A \(shape\)"):
        S.gain_statistic([0.5, 0.6])


def test_rank_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    s = np.round(rng.normal(size=(3, 40)) + y, 1)  # rounding makes ties
    expected = [roc_auc_score(y, row) for row in s]
    np.testing.assert_allclose(S._auc(y, s), expected)


def _world(rng, peaks, n=200, n_layers=5, signal=1.5, width=1.0):
    """Tasks whose probe separates the classes best at layer ``peaks[t]``."""
    labels, scores = [], []
    for peak in peaks:
        y = np.repeat([0, 1], n // 2)
        strength = signal * np.exp(-0.5 * ((np.arange(n_layers) - peak) / width) ** 2)[:, None]
        scores.append(strength * y + rng.normal(size=(n_layers, n)))
        labels.append(y)
    return labels, scores


def test_layer_null_rejects_when_tasks_peak_apart_and_not_when_they_share_a_peak():
    rng = np.random.default_rng(1)
    apart = S.layer_null(*_world(rng, [0, 4, 0, 4, 2, 2]), n_boot=200, seed=0)
    assert apart.p_value < 0.01 and apart.interval()[0] > 0
    # a nearly flat common profile: the best layer is mostly selection noise
    shared = S.layer_null(*_world(rng, [2] * 6, signal=0.6, width=4.0), n_boot=200, seed=0)
    assert shared.observed > 0  # selection noise alone makes G positive
    assert shared.p_value > 0.05 and shared.interval()[0] < 0


def test_layer_null_false_positive_rate_is_about_its_level():
    rng = np.random.default_rng(2)
    worlds = [_world(rng, [1] * 4, n=120, signal=0.6, width=4.0) for _ in range(40)]
    rejected = [S.layer_null(*w, n_boot=100, seed=s).p_value < 0.05 for s, w in enumerate(worlds)]
    assert np.mean(rejected) <= 0.15  # 0.05 nominal; 40 worlds


def test_layer_null_errors():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"labels, scores \(tasks\)"):
        S.layer_null([y], [np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"scores\[1\] \(shape\)"):
        S.layer_null([y, y], [np.zeros((2, 4)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        S.layer_null([np.zeros(4), y], [np.zeros((2, 4))] * 2)
    with pytest.raises(ValueError, match="n_boot"):
        S.layer_null([y, y], [np.zeros((2, 4))] * 2, n_boot=0)


def test_splittable_counts_groups():
    y = np.repeat([0, 1], 100)
    ok, counts = S.splittable(y, np.arange(200), seed=0, min_test_groups=20)
    assert ok and counts == {"train": 120, "val": 40, "test": 40}
    few = np.arange(200) % 30  # 30 groups per class, 60 in all: 12 in a fold of 5
    ok, counts = S.splittable(y, np.where(y == 1, few + 100, few), seed=0)
    assert not ok and counts["test"] == 12
    ok, _ = S.splittable(y, np.where(y == 1, 1, 0), seed=0)  # cannot split at all
    assert not ok


def _write_build(root, tasks):
    """A task folder as ``build`` writes it: ``{name: (labels, groups)}``, texts made up."""
    (root / "tasks").mkdir(parents=True)
    manifest = {"tasks": {}, "skipped": {}}
    for name, (labels, groups) in tasks.items():
        rows = [{"text": f"{name} {i}", "label": int(y), "group": str(g)}
                for i, (y, g) in enumerate(zip(labels, groups, strict=True))]  # fmt: skip
        data = "".join(json.dumps(r) + "\n" for r in rows)
        (root / "tasks" / f"{name}.jsonl").write_text(data)
        entry = {"family": name.split("_")[0], "file": f"tasks/{name}.jsonl"}
        manifest["tasks"][name] = entry | {"sha256": sha256_bytes(data)}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_usable_tasks_keep_the_requested_tasks_that_split(tmp_path):
    y = np.repeat([0, 1], 100)
    few = np.where(y == 1, np.arange(200) % 30 + 100, np.arange(200) % 30)  # 12 in a fold
    manifest = _write_build(tmp_path, {"a_one": (y, np.arange(200)), "b_two": (y, few),
                                       "c_three": (y, np.arange(200) + 1000)})  # fmt: skip
    chosen = S.usable_tasks(tmp_path, manifest, ["c_three", "b_two", "a_one", "z"], seed=0)
    assert [t.name for t in chosen.tasks] == ["c_three", "a_one"]  # request order
    assert chosen.dropped == ["b_two"] and chosen.missing == ["z"]
    assert chosen.splits["task"].tolist() == ["c_three", "b_two", "a_one"]
    assert chosen.splits.set_index("task").loc["b_two", "test groups"] == 12
    assert chosen.splits.set_index("task").loc["a_one", "family"] == "a"
    assert [t.name for t in S.usable_tasks(tmp_path, manifest, [], seed=0).tasks] == [
        "a_one", "c_three"]  # fmt: skip
    with pytest.raises(ValueError, match=r"at least two; .*dropped \['b_two'\]"):
        S.usable_tasks(tmp_path, manifest, ["a_one", "b_two"], seed=0)


def _row(task, layer, pooling, method, val, test):
    return {"task": task, "hook": f"blocks.{layer}.x", "layer": layer, "pooling": pooling,
            "method": method, "val_auc": val, "test_auc": test}  # fmt: skip


def test_flag_tasks_chance_and_ceiling():
    rows = []
    for task, (v1, v2) in {"low": (0.55, 0.59), "top": (0.99, 0.985), "ok": (0.7, 0.99)}.items():
        for layer, v in ((1, v1), (2, v2)):
            rows += [_row(task, layer, "mean", "dense", v, v), _row(task, layer, "last", "dense",
                     v - 0.1, v), _row(task, layer, "mean", "sae_k1", 0.3, 0.3)]  # fmt: skip
    flags = S.flag_tasks(pd.DataFrame(rows))
    assert flags["flag"].to_dict() == {"low": "chance", "top": "ceiling", "ok": ""}
    assert flags.loc["ok"].tolist()[:2] == [0.99, 0.7]


def test_claim_effects_by_hand():
    rows = []
    #            layer: (dense val, dense test, sae val, sae test)
    spec = {"a": {1: (0.8, 0.80, 0.7, 0.75), 2: (0.9, 0.85, 0.95, 0.90)},
            "b": {1: (0.9, 0.70, 0.8, 0.60), 2: (0.7, 0.65, 0.9, 0.72)}}  # fmt: skip
    for task, by_layer in spec.items():
        for layer, (dv, dt, sv, st) in by_layer.items():
            rows += [_row(task, layer, "mean", "dense", dv, dt),
                     _row(task, layer, "mean", "sae_k2", sv, st)]  # fmt: skip
    table = with_family(pd.DataFrame(rows))
    scarce = pd.DataFrame(
        [
            _row(t, 2, "mean", m, v, te) | {"n_train": n, "draw": d}
            for t in ("a", "b")
            for n in (8, 16)
            for d in (0, 1)
            for m, v, te in (
                ("dense", 0.6, 0.6 + 0.1 * d),
                ("sae_k1", 0.7 - 0.3 * d, 0.65),
                ("sae_k4", 0.5, 0.9),
            )
        ]  # fmt: skip
    )
    null = S.LayerNull(0.1, np.array([0.0, 0.02, 0.04]), 0.25)
    e = claim_effects(table, 2, scarce, ["a", "b"], null)
    assert e["sae_beats_dense_fixed"] == pytest.approx([0.05, 0.07])
    assert e["sae_beats_dense_per_task"] == pytest.approx([0.05, 0.02])  # b: dense at 1, sae at 2
    assert e["quiver_sae_helps_fixed"] == pytest.approx([0.05, 0.07])
    # without SAE probes, each task's dense probe at its best layer (a: 2, b: 1) against 2
    assert e["per_task_layer_pays"] == pytest.approx([0.0, 0.05])
    # scarce at n=8: draw 0: sae_k1 (val 0.7) beats dense (0.6) and sae_k4: 0.65 - 0.6;
    # draw 1: sae_k4 (0.5) is the best SAE probe (0.9 - 0.7), dense (0.6) the quiver's pick
    assert e["scarce_sae_helps"] == pytest.approx([0.025, 0.025])  # (0.05 + 0) / 2
    assert e["scarce_sae_beats_dense"] == pytest.approx([0.125, 0.125])  # (0.05 + 0.2) / 2
    curves = scarce_curves(scarce, ["a"])
    assert len(curves) == 4 and set(curves["task"]) == {"a"}
    assert e["best_layer_differs"] == Interval(0.08, 0.1 - 0.039, 0.1 - 0.001, 3)
    claims = load([{"id": "best_layer_differs", "statement": "s", "source": "s", "metric": "m",
                    "direction": "greater", "threshold": 0.0}])  # fmt: skip
    table = verdicts(claims, {"best_layer_differs": e["best_layer_differs"]})
    assert table.loc["best_layer_differs", "verdict"] == "supported"
    assert table.loc["best_layer_differs", "n"] == 3


def test_cached_features_equal_fresh_ones_and_refuse_damage(tiny_lm, tmp_path):
    lm, _ = tiny_lm
    texts = ["the cat sat on a mat", "a dog ran", "old town by the sea"]
    hooks = [resid_hook(0), resid_hook(1)]
    sites = [Site(lm.name, h, 1.0, None, 1) for h in hooks]
    sae = make_sae(SAEConfig(d_in=32, d_sae=16, architecture="topk", k=3))
    fresh = pooled_features(lm, texts, sites, {hooks[1]: sae}, max_tokens=8, progress=False)
    first = cached_features(lm, texts, sites, {hooks[1]: sae}, 8, tmp_path, progress=False)
    again = cached_features(lm, texts, sites, {hooks[1]: sae}, 8, tmp_path, progress=False)
    assert set(first) == set(fresh) == set(again)
    for key in fresh:
        assert set(again[key]) == set(fresh[key])
        for kind in fresh[key]:
            torch.testing.assert_close(first[key][kind], fresh[key][kind])
            torch.testing.assert_close(again[key][kind], fresh[key][kind])
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 2  # one per hook
    # another SAE, or other texts: other folders, never the cached ones
    other = make_sae(SAEConfig(d_in=32, d_sae=16, architecture="topk", k=3, seed=1))
    cached_features(lm, texts, sites[1:], {hooks[1]: other}, 8, tmp_path, progress=False)
    cached_features(lm, texts[:2], sites[:1], {}, 8, tmp_path, progress=False)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 4
    # a flipped byte is named, not used
    data = bytearray((folders[0] / "features.safetensors").read_bytes())
    data[-1] ^= 1
    (folders[0] / "features.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its manifest sha256"):
        cached_features(lm, texts, sites, {hooks[1]: sae}, 8, tmp_path, progress=False)
    shutil.rmtree(folders[0])  # a deleted folder is computed again
    manifest = json.loads((folders[1] / "manifest.json").read_text())
    (folders[1] / "manifest.json").write_text(json.dumps(manifest | {"max_tokens": 9}))
    with pytest.raises(ValueError, match=r"manifest differs from the request in \['max_tokens'\]"):
        cached_features(lm, texts, sites, {hooks[1]: sae}, 8, tmp_path, progress=False)


def test_probe_cached_rows_do_not_depend_on_layers_per_pass(tiny_lm, tmp_path):
    lm, _ = tiny_lm
    words = "the cat dog sat ran on a mat old town by sea red big house".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 2 + i % 5)) + f" {i}" for i in range(40)]
    tasks = [ProbingTask("toy", texts, np.arange(40) % 2, np.arange(40)),
             ProbingTask("rev", texts[::-1], np.arange(40) // 20, np.arange(40))]  # fmt: skip
    hooks = [resid_hook(layer) for layer in range(3)]
    sites = [Site(lm.name, h, 1.0, None, 1) for h in hooks]
    saes = {hooks[1]: make_sae(SAEConfig(d_in=32, d_sae=16, architecture="topk", k=3))}
    kw = {"ks": (1,), "Cs": (1.0,), "n_components": 2, "progress": False}
    together = probe_cached(tasks, lm, texts, sites, saes, 8, 3, tmp_path / "a", **kw)
    apart = probe_cached(tasks, lm, texts, sites, saes, 8, 1, tmp_path / "b", **kw)
    key = ["task", "layer", "pooling", "method"]  # the order is by pass, then task
    pd.testing.assert_frame_equal(
        together.sort_values(key, ignore_index=True), apart.sort_values(key, ignore_index=True)
    )
    # per task: 3 hooks x 2 poolings x (dense, pca), and the SAE probe at the hook with one
    assert len(together) == 2 * (3 * 2 * 2 + 2)
    assert set(together.loc[together["method"] == "sae_k1", "layer"]) == {1}
    assert len(list((tmp_path / "b").iterdir())) == 3  # one cached folder per hook
    with pytest.raises(ValueError, match="layers_per_pass"):
        probe_cached(tasks, lm, texts, sites, saes, 8, 0, tmp_path / "c", **kw)


def test_dense_val_scores_take_each_layers_best_pooling_in_layer_order():
    y = np.array([0, 1, 1])
    rows = []
    for task in ("a", "b"):
        for layer in (5, 1):  # out of order on purpose
            for pooling, val in (("last", 0.6), ("mean", 0.7 if layer == 5 else 0.5)):
                scores = np.array([layer, 10 * (pooling == "mean"), 0.0])
                rows.append(_row(task, layer, pooling, "dense", val, val)
                            | {"val_scores": scores, "val_labels": y})  # fmt: skip
            rows.append(_row(task, layer, "mean", "sae_k1", 0.99, 0.99)
                        | {"val_scores": np.full(3, -1.0), "val_labels": y})  # fmt: skip
    labels, scores = S.dense_val_scores(pd.DataFrame(rows), ["b", "a"])
    assert len(labels) == 2 and labels[0].tolist() == [0, 1, 1]
    # layer 1: "last" (0.6 > 0.5); layer 5: "mean" (0.7 > 0.6); rows in layer order
    np.testing.assert_array_equal(scores[0], [[1, 0, 0], [5, 10, 0]])
    with pytest.raises(ValueError, match="val_scores"):
        S.dense_val_scores(pd.DataFrame(rows).drop(columns="val_scores"), ["a"])
    with pytest.raises(ValueError, match="tasks must be a task of the table"):
        S.dense_val_scores(pd.DataFrame(rows), ["c"])
