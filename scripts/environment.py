"""Write environment.yml from requirements.lock: the conda route to the same exact versions.

    python scripts/environment.py          # after `make lock`; tests/test_packaging.py checks

Conda supplies the interpreter and pip; every package comes from pip at the version
requirements.lock pins (conda-forge need not carry those exact builds), torch at the
Makefile's TORCH_SPEC, then saelib itself, editable.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", re.M)

HEADER = """\
# Generated from requirements.lock by scripts/environment.py (make lock runs it); do not
# edit by hand. The same exact versions as the lock, installed by pip inside conda:
#   conda env create -f environment.yml && conda activate saelib
# torch: PyPI's default Linux wheel is the large CUDA build; on a CPU-only machine add
# --index-url with PyTorch's CPU-only wheel index to the torch line, or install torch first.
name: saelib
channels:
  - conda-forge
dependencies:
"""


def lock_pins(text: str) -> dict[str, str]:
    """``{name: version}`` of every ``name==version`` line of a requirements file."""
    return dict(PIN.findall(text))


def torch_spec() -> str:
    return re.search(r"^TORCH_SPEC \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def environment(lock: str, python: str) -> str:
    """environment.yml's text for the lock ``lock`` and the interpreter version ``python``."""
    lines = [f"  - python={python}", "  - pip", "  - pip:", f"      - {torch_spec()}"]
    lines += [f"      - {name}=={v}" for name, v in sorted(lock_pins(lock).items())]
    lines += ["      - -e ."]
    return HEADER + "\n".join(lines) + "\n"


if __name__ == "__main__":
    lock = (ROOT / "requirements.lock").read_text()
    (ROOT / "environment.yml").write_text(environment(lock, python_version()))
    print(f"environment.yml: {len(lock_pins(lock))} packages from requirements.lock")
