"""environment.yml and pyproject.toml must name the same dependencies with the same bounds."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_ONLY = {"python", "pip"}  # the interpreter and installer, not dependencies


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(_split(r) for r in reqs)


def environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            if entry.startswith("-e"):
                continue
            name, spec = _split(entry)
            if name not in CONDA_ONLY:
                out[name] = spec
    return out


def test_same_dependencies_and_bounds():
    assert environment_requirements() == pyproject_requirements()


def test_the_parser_sees_differences():
    """Guard against a comparison that cannot fail: a changed bound is noticed."""
    reqs = pyproject_requirements()
    assert reqs["torch"] == ">=2.6" and "jupyter-book" in reqs
    altered = dict(reqs, torch=">=9")
    assert altered != environment_requirements()


def test_torch_is_pinned_to_the_cpu_build_in_the_installer():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_SPEC \?= torch==2\.13\.0$", makefile, re.M)
    # and it is installed before the package, so no resolver ever picks a CUDA torch
    assert makefile.index('"$(TORCH_SPEC)"') < makefile.index("-e '.[")
