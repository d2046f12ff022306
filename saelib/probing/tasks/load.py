"""Read built probing tasks back, checking each file against the manifest's sha256."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saelib.files import sha256_bytes
from saelib.probing.tasks.builder import default_dir
from saelib.validation import check_choice


@dataclass
class ProbingTask:
    """One binary task: ``texts[i]`` has label ``labels[i]`` (0/1) and group ``groups[i]``."""

    name: str
    texts: list[str]
    labels: np.ndarray  # [n] int64
    groups: np.ndarray  # [n] str


def _manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no probing manifest at {path}: "
            f"run `python -m saelib.probing.tasks build --out {root}`"
        )
    return json.loads(path.read_text())


def available_tasks(root: str | Path | None = None) -> list[str]:
    """Names of the tasks built in ``root`` (default: the cache's ``probing`` folder)."""
    return sorted(_manifest(Path(root) if root else default_dir())["tasks"])


def load_task(name: str, root: str | Path | None = None) -> ProbingTask:
    """Task ``name`` from ``root``; raises if it is unknown or its file does not match."""
    root = Path(root) if root else default_dir()
    tasks = _manifest(root)["tasks"]
    check_choice("name", name, sorted(tasks))
    data = (root / tasks[name]["file"]).read_bytes()
    if sha256_bytes(data) != tasks[name]["sha256"]:
        raise ValueError(f"{root / tasks[name]['file']} does not match its manifest sha256")
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    groups = np.array([r["group"] for r in rows])
    return ProbingTask(name, [r["text"] for r in rows], labels, groups)
