"""The package's layering, read from the imports: dependencies point one way.

The core (everything at the top of ``saelib/`` and ``saes/``) imports none of the parts of the
book; ``toys`` and ``lm`` never import each other; no module imports ``plotting`` or
``parameters`` (they serve the notebooks).
"""

import ast
from pathlib import Path

import pytest

SAELIB = Path(__file__).resolve().parents[1] / "saelib"
PARTS = ("coding", "toys", "lm", "probing")
NOTEBOOK_ONLY = ("plotting", "parameters")


def _saelib_imports(path: Path) -> set[str]:
    """The ``saelib`` sub-package or top module each import of ``path`` names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        names |= {m.split(".")[1] for m in modules if m.startswith("saelib.")}
    return names


def _home(path: Path) -> str:
    rel = path.relative_to(SAELIB).parts
    return rel[0] if len(rel) > 1 else path.stem


MODULES = sorted(SAELIB.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SAELIB)))
def test_dependencies_point_one_way(path):
    home, imported = _home(path), _saelib_imports(path)
    forbidden = set(NOTEBOOK_ONLY) - {home}
    if home not in PARTS and home not in NOTEBOOK_ONLY:  # the core
        forbidden |= set(PARTS)
    if home in ("toys", "lm"):
        forbidden.add("lm" if home == "toys" else "toys")
    assert not imported & forbidden, f"{path.relative_to(SAELIB)} imports {imported & forbidden}"


def test_the_check_sees_imports():
    """The reader is not vacuous: known edges are found."""
    assert "lm" in _saelib_imports(SAELIB / "probing" / "layers.py")
    assert "saes" in _saelib_imports(SAELIB / "evaluation.py")
