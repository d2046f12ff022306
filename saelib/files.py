"""Files written whole or not at all, and their checksums.

    with atomic_path(path) as tmp:      # write to tmp (a file or a folder); renamed on success
        save_file(tensors, tmp)
    digest = sha256_file(path)

A crash leaves the old ``path`` or the new one, never half of either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CHUNK = 1 << 20


def sha256_bytes(data: bytes | str) -> str:
    """Hex SHA-256 of ``data`` (a ``str`` is encoded as UTF-8)."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | Path, keep_old: bool = False) -> Iterator[Path]:
    """Yield ``<path>.tmp`` to write; on success it replaces ``path`` (a file or a folder).

    On an exception the temporary is removed and ``path`` is left as it was. A folder is
    replaced in two renames (the old one is moved aside to ``<path>.old`` first, then
    deleted; with ``keep_old`` it stays there, replacing the previous ``.old``, as a
    fallback should the new one be damaged later).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir():
        old = path.with_name(path.name + ".old")
        _remove(old)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        if not keep_old:
            _remove(old)
    else:
        os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
