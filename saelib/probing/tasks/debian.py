"""Optional families from Debian packages: fortune languages and WordNet noun supersenses.

Each raises :class:`~saelib.lm.sources.SourceUnavailable` when its packages
cannot be had (not Debian, offline); the builder then skips its tasks and says so.
"""

from __future__ import annotations

import random
from importlib.metadata import version
from pathlib import Path

from saelib.lm.sources import SourceUnavailable, fetch_deb
from saelib.probing.tasks.families import Family

# language code (as langdetect names it) -> Debian package
FORTUNES = {
    "en": "fortunes",
    "de": "fortunes-de",
    "es": "fortunes-es",
    "it": "fortunes-it",
    "pl": "fortunes-pl",
    "ru": "fortunes-ru",
}


def _fortune_files(root: Path) -> list[Path]:
    base = root / "usr/share/games/fortunes"
    return sorted(
        p
        for p in base.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and p.suffix not in (".dat", ".u8")
        and "off" not in p.relative_to(base).parts  # the offensive sets
    )


def fortunes(per_language: int = 2000, seed: int = 0, min_chars: int = 40) -> Family:
    """Language of a fortune, one language against the others; group = fortune file.

    Entries are shuffled with ``seed`` and kept only when ``langdetect`` (seeded with
    ``DetectorFactory.seed = 0``) agrees with the package's language, until
    ``per_language`` are kept: the German package holds English quotations, for example.
    """
    try:
        from langdetect import DetectorFactory, LangDetectException, detect
    except ImportError as err:
        raise SourceUnavailable("fortune languages need the langdetect package") from err
    DetectorFactory.seed = 0
    items = []
    records = [{"kind": "pypi", "project": "langdetect", "version": version("langdetect")}]
    for lang, package in FORTUNES.items():
        root, record = fetch_deb(package)
        records.append(record)
        entries = []
        for f in _fortune_files(root):
            text = f.read_text(encoding="utf-8", errors="replace")
            group = f"fortunes/{package}/{f.relative_to(root).name}"
            for entry in text.split("\n%\n"):
                entry = entry.strip().strip("%").strip()
                if min_chars <= len(entry) <= 800:
                    entries.append((entry, lang, group))
        random.Random(f"fortunes-{seed}-{lang}").shuffle(entries)
        kept = 0
        for item in entries:
            if kept >= per_language:
                break
            try:
                if detect(item[0]) != lang:
                    continue
            except LangDetectException:
                continue
            items.append(item)
            kept += 1
    tasks = {f"language_{lang}": ({lang}, set(FORTUNES) - {lang}) for lang in FORTUNES}
    return Family(items, tasks, records)


# WordNet lexicographer files of nouns (lexnames): number -> supersense
SUPERSENSES = {5: "animal", 6: "artifact", 8: "body", 13: "food", 15: "location"}
SUPERSENSES |= {18: "person", 20: "plant"}


def wordnet() -> Family:
    """Noun supersense of a WordNet gloss (the definition, without the lemma), one against
    all other nouns; group = the synset's first hypernym, so sister synsets (species of
    one genus, with near-identical glosses) never straddle a split."""
    root, record = fetch_deb("wordnet-base")
    path = root / "usr/share/wordnet/data.noun"
    if not path.is_file():
        raise SourceUnavailable(f"wordnet-base has no {path.relative_to(root)}")
    items = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(" ") or "|" not in line:
            continue  # the licence header
        head, gloss = line.split("|", 1)
        fields = head.split()
        lex = int(fields[1])
        n_words = int(fields[3], 16)
        n_pointers = int(fields[4 + 2 * n_words])
        pointers = fields[5 + 2 * n_words : 5 + 2 * n_words + 4 * n_pointers]
        hypernyms = [
            pointers[i + 1] for i in range(0, len(pointers), 4) if pointers[i] in ("@", "@i")
        ]
        group = f"wordnet/{hypernyms[0] if hypernyms else fields[0]}"
        items.append((gloss.strip(), SUPERSENSES.get(lex, "other"), group))
    names = set(SUPERSENSES.values()) | {"other"}
    tasks = {f"wordnet_{s}": ({s}, names - {s}) for s in sorted(SUPERSENSES.values())}
    return Family(items, tasks, [record])
