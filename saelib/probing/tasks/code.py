"""Programming language of a code chunk, from files already on disk.

Python: the running interpreter's standard library. C: the C API headers of Python and
numpy. C++: torch's ATen, c10 and torch headers. JavaScript: the files shipped by installed
packages (minified files are left out). Each file is cut into chunks of about
``chunk_chars`` characters at line boundaries after its leading comment block (often a
licence) is dropped; group = file, at most ``per_file`` chunks per file, so no single file
dominates a class. The versions of Python, numpy and torch and the packages that provided
JavaScript files are recorded. Files are read in a
seeded random order until a language has ``budget`` chunks (reading all of torch's 8,700
headers takes half a minute).
"""

from __future__ import annotations

import importlib.metadata
import os
import random
import re
import sys
import sysconfig
from pathlib import Path

from saelib.files import sha256_bytes
from saelib.probing.tasks.families import Family, chunk_lines

LANGUAGES = ("python", "c", "cpp", "javascript")
_LEADING_COMMENT = re.compile(r"\A\s*(/\*.*?\*/\s*|(?://[^\n]*\n\s*)+|(?:#[^\n]*\n\s*)+)", re.S)
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}


def _roots() -> dict[str, list[tuple[Path, tuple[str, ...]]]]:
    import numpy
    import torch

    std = Path(sysconfig.get_paths()["stdlib"])
    site = Path(sysconfig.get_paths()["purelib"])
    torch_inc = Path(torch.__path__[0]) / "include"
    return {
        "python": [(std, (".py",))],
        "c": [
            (Path(sysconfig.get_paths()["include"]), (".h",)),
            (Path(numpy.get_include()), (".h",)),
        ],
        "cpp": [(torch_inc / d, (".h", ".hpp")) for d in ("ATen", "c10", "torch")],
        "javascript": [(site, (".js",))],
    }


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under ``root`` with one of ``suffixes``, sorted; test and vendored dirs pruned."""
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
        for name in names:
            if name.endswith(suffixes) and not name.endswith((".min.js", ".min.css")):
                p = Path(folder, name)
                if not p.is_symlink():
                    out.append(p)
    return sorted(out)


def _chunks_of(path: Path, chunk_chars: int, per_file: int) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return []
    lines = text.splitlines() or [""]
    if max(len(x) for x in lines) > 400:  # minified or generated
        return []
    chunks = chunk_lines(_LEADING_COMMENT.sub("", text, count=1), chunk_chars)
    if len(chunks) <= per_file:
        return chunks
    # a deterministic spread over the file, not only its beginning
    step = len(chunks) / per_file
    return [chunks[int(i * step)] for i in range(per_file)]


def code(chunk_chars: int = 400, per_file: int = 20, budget: int = 6000, seed: int = 0) -> Family:
    """One-vs-rest tasks ``code_<language>`` for the languages in :data:`LANGUAGES`.

    Per language, files are shuffled with ``seed`` and read until ``budget`` chunks.
    """
    items, providers = [], set()
    site = Path(sysconfig.get_paths()["purelib"])
    for lang, roots in _roots().items():
        files = [(root, f) for root, sfx in roots for f in _files(root, sfx)]
        random.Random(f"code-files-{seed}-{lang}").shuffle(files)
        n = 0
        for root, f in files:
            if n >= budget:
                break
            chunks = _chunks_of(f, chunk_chars, per_file)
            n += len(chunks)
            group = f"code/{lang}/{sha256_bytes(str(f.relative_to(root)))[:12]}"
            items += [(c, lang, f"{group}/{f.name}") for c in chunks]
            if chunks and root == site:
                providers.add(f.relative_to(site).parts[0])
    import numpy
    import torch

    versions = {"python": sys.version.split()[0], "numpy": numpy.__version__}
    versions["torch"] = torch.__version__
    owners = None
    for top in sorted(providers):
        try:
            versions[top] = f"{top} {importlib.metadata.version(top)}"
        except importlib.metadata.PackageNotFoundError:
            owners = owners or importlib.metadata.packages_distributions()  # slow: seconds
            dist = owners.get(top, [top])[0]
            try:
                versions[top] = f"{dist} {importlib.metadata.version(dist)}"
            except importlib.metadata.PackageNotFoundError:
                versions[top] = "unknown"
    record = {"kind": "files-on-disk", "name": "code", "versions": versions}
    tasks = {f"code_{lang}": ({lang}, set(LANGUAGES) - {lang}) for lang in LANGUAGES}
    return Family(items, tasks, [record])
