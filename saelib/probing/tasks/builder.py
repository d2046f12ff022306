"""Build the probing tasks into a folder of JSON-lines files with a manifest.

    python -m saelib.probing.tasks build --out DIR [--cap 2000] [--families code,vader]

Each task is ``<out>/tasks/<name>.jsonl``: one ``{"text", "label", "group"}`` object per line
(label 1 = the positive class), balanced, at most ``cap`` examples per class, sampled with
a seed named after the task. ``<out>/manifest.json`` records the sources (versions, sha256),
the settings, and per task its family, class sizes, number of groups and the file's sha256;
tasks whose source could not be had are listed under ``skipped`` with the reason.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from saelib.files import atomic_path, sha256_bytes, write_text_atomic
from saelib.lm.sources import SourceUnavailable, cache_dir
from saelib.probing.tasks import code, debian, families, original
from saelib.probing.tasks.families import Family
from saelib.validation import check_int, require

FORMAT = 1
# family name -> builder; the Debian ones are optional
FAMILIES: dict[str, Callable[..., Family]] = {
    "vader": families.vader,
    "shakespeare": families.shakespeare,
    "code": code.code,
    "fortunes": debian.fortunes,
    "wordnet": debian.wordnet,
    "kantamneni": original.kantamneni,  # the paper's own datasets; only when asked for
}
DEFAULT_FAMILIES = ["vader", "shakespeare", "code", "fortunes", "wordnet"]


def default_dir() -> Path:
    return cache_dir() / "probing"


def _check(cap: int, min_per_class: int, names: list[str], family_kwargs) -> None:
    check_int("cap", cap, low=1)
    check_int("min_per_class", min_per_class, low=1)
    unknown = [n for n in names if n not in FAMILIES]
    require(not unknown, "family_names", unknown, f"among {sorted(FAMILIES)}")
    ok = isinstance(family_kwargs, dict)
    ok = ok and all(isinstance(v, dict) for v in family_kwargs.values())
    require(ok, "family_kwargs", family_kwargs, "a dict of keyword arguments per family")


def sample_task(family: Family, task: str, cap: int, seed: int) -> list[dict[str, object]]:
    """Balanced examples of ``task``: ``min(cap, n_pos, n_neg)`` per class, shuffled."""
    pos_cats, neg_cats = family.tasks[task]
    pos = [(t, g) for t, c, g in family.items if c in pos_cats]
    neg = [(t, g) for t, c, g in family.items if c in neg_cats]
    n = min(cap, len(pos), len(neg))
    rng = random.Random(f"probing-task-{seed}-{task}")
    rows = [(t, 1, g) for t, g in rng.sample(pos, n)] + [(t, 0, g) for t, g in rng.sample(neg, n)]
    rng.shuffle(rows)
    return [{"text": t, "label": y, "group": g} for t, y, g in rows]


def build(
    out: str | Path | None = None,
    family_names: list[str] | None = None,
    cap: int = 2000,
    min_per_class: int = 200,
    seed: int = 0,
    family_kwargs: dict[str, dict] | None = None,
    verbose: bool = True,
    reuse: bool = False,
) -> dict:
    """Build the tasks of ``family_names`` into ``out``; return the manifest.

    The default families are the offline ones built from real text (``DEFAULT_FAMILIES``);
    ``"kantamneni"`` adds the original datasets of Kantamneni et al. (2025) from PyPI.

    ``reuse=True`` returns the manifest already in ``out`` when it was built with these
    settings (format, seed, cap, min_per_class, families and their keyword arguments,
    skipped families included); ``load_task`` still checks every file's sha256 on reading.

    A family whose source is unavailable is skipped with its reason; a task with fewer than
    ``min_per_class`` examples in a class is skipped too. ``family_kwargs`` passes settings to
    a family (e.g. ``{"code": {"budget": 500}}`` for a small test build).
    """
    names = list(DEFAULT_FAMILIES) if family_names is None else list(family_names)
    _check(cap, min_per_class, names, {} if family_kwargs is None else family_kwargs)
    out = Path(out) if out is not None else default_dir()
    if reuse and _built_with(out, names, cap, min_per_class, seed, family_kwargs or {}):
        return json.loads((out / "manifest.json").read_text())
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "seed": seed, "cap": cap, "min_per_class": min_per_class}
    manifest |= {"families": {}, "tasks": {}, "skipped": {}}
    say = print if verbose else (lambda *a, **k: None)
    for name in names:
        start = time.perf_counter()
        kwargs = (family_kwargs or {}).get(name, {})
        try:
            fam = FAMILIES[name](**kwargs)
        except SourceUnavailable as err:
            manifest["skipped"][name] = str(err)
            say(f"[skip] family {name}: {err}")
            continue
        manifest["families"][name] = {"sources": fam.sources, "settings": kwargs}
        for task in sorted(fam.tasks):
            rows = sample_task(fam, task, cap, seed)
            n = len(rows) // 2
            if n < min_per_class:
                manifest["skipped"][task] = f"only {n} examples per class (< {min_per_class})"
                say(f"[skip] task {task}: {manifest['skipped'][task]}")
                continue
            manifest["tasks"][task] = {"family": name} | _write_task(out, task, rows)
        say(f"[done] family {name}: {len(fam.tasks)} tasks in {time.perf_counter() - start:.1f} s")
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _write_task(out: Path, task: str, rows: list[dict]) -> dict:
    """Write ``<out>/tasks/<task>.jsonl`` whole or not at all; its manifest entry."""
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    with atomic_path(out / "tasks" / f"{task}.jsonl") as tmp:
        tmp.write_bytes(data.encode("utf-8"))
    return {
        "n_per_class": len(rows) // 2,
        "n_groups": len({r["group"] for r in rows}),
        "file": f"tasks/{task}.jsonl",
        "sha256": sha256_bytes(data),
    }


def _built_with(out: Path, names, cap, min_per_class, seed, family_kwargs) -> bool:
    """Whether ``out`` holds a build with exactly these settings."""
    path = out / "manifest.json"
    if not path.is_file():
        return False
    old = json.loads(path.read_text())
    same = {"format": FORMAT, "seed": seed, "cap": cap, "min_per_class": min_per_class}
    built = {n: f["settings"] for n, f in old.get("families", {}).items()}
    built |= {n: family_kwargs.get(n, {}) for n in old.get("skipped", {}) if n in FAMILIES}
    wanted = {n: family_kwargs.get(n, {}) for n in names}
    return all(old.get(k) == v for k, v in same.items()) and built == wanted
