"""requirements.lock pins every dependency of pyproject.toml within its range, with hashes;
environment.yml is generated from the lock and must be in step with it."""

import importlib.util
import re
import tomllib
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(_split(r) for r in reqs)


def load_script():
    spec = importlib.util.spec_from_file_location("environment", ROOT / "scripts/environment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lock_pins_every_dependency_within_its_range_with_hashes():
    lock = (ROOT / "requirements.lock").read_text()
    pins = {name.lower().replace("_", "-"): v for name, v in load_script().lock_pins(lock).items()}
    for name, spec in pyproject_requirements().items():
        if name == "torch":  # pinned by the Makefile's TORCH_SPEC, not the lock
            continue
        assert name in pins, f"{name} is not in requirements.lock: run make lock"
        assert Version(pins[name]) in SpecifierSet(spec), f"{name}=={pins[name]} not {spec}"
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    assert not re.search(r"^torch==", lock, re.M)


def test_environment_yml_is_in_step_with_the_lock():
    script = load_script()
    text = (ROOT / "environment.yml").read_text()
    python = re.search(r"^  - python=(\S+)$", text, re.M).group(1)
    expected = script.environment((ROOT / "requirements.lock").read_text(), python)
    assert text == expected, "environment.yml differs from requirements.lock: run make lock"
    env = yaml.safe_load(text)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip[0] == "torch==2.13.0" and pip[-1] == "-e ." and len(pip) > 100


def test_the_lock_parser_sees_differences():
    """Guard against a comparison that cannot fail: a changed pin is noticed."""
    script = load_script()
    lock = (ROOT / "requirements.lock").read_text()
    altered = re.sub(r"^numpy==\S+", "numpy==1.0.0", lock, flags=re.M)
    assert script.lock_pins(altered)["numpy"] == "1.0.0"
    assert script.environment(altered, "3.11.7") != script.environment(lock, "3.11.7")


def test_torch_is_pinned_to_the_cpu_build_in_the_installer():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_SPEC \?= torch==2\.13\.0$", makefile, re.M)
    # and it is installed before the package, so no resolver ever picks a CUDA torch
    assert makefile.index('"$(TORCH_SPEC)"') < makefile.index("-e '.[")
