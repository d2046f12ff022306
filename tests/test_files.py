"""Atomic writes and checksums: a failed write leaves the old file or folder untouched."""

import hashlib

import pytest

from saelib.files import atomic_path, sha256_bytes, sha256_file, write_text_atomic


def test_checksums_match_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # > 1 MiB: more than one chunk
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest() == sha256_bytes(data)
    assert sha256_bytes("é") == hashlib.sha256("é".encode()).hexdigest()


def test_file_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "a.json"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old" and not tmp.exists()
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_folder_is_replaced_and_nothing_is_left_over(tmp_path):
    folder = tmp_path / "ckpt"
    for content in ("first", "second"):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(content)
    assert (folder / "weights").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with pytest.raises(KeyboardInterrupt), atomic_path(folder) as tmp:
        tmp.mkdir()
        raise KeyboardInterrupt
    assert (folder / "weights").read_text() == "second" and not tmp.exists()
