"""The chapters' parameter schemas: every notebook's defaults pass; chapters 03/04's rules fail."""

import json
from pathlib import Path

import pytest

from saelib.parameters import check_chapter

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _load_runner():
    """``scripts/chapters.py`` as a module: the one reader of a notebook's defaults."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "chapters", NOTEBOOKS.parent / "scripts" / "chapters.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chapters = _load_runner()
defaults = chapters.notebook_defaults


@pytest.mark.parametrize("chapter", sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
def test_defaults_pass(chapter):
    """Every chapter's own defaults (its ci preset) pass its schema: the same names (no
    unknown, none missing), types, ranges and rules."""
    params = check_chapter(defaults(chapter), chapter)
    assert params["device"] in ("cpu", "cuda")


@pytest.mark.parametrize("chapter", sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
def test_papermill_sees_every_parameter(chapter):
    """papermill infers each parameter of the parameters cell (one plain assignment per
    name): a tuple assignment hides its names, and ``-p name value`` then prints "Passed
    unknown parameter" although the value is injected."""
    import papermill

    inferred = set(papermill.inspect_notebook(str(NOTEBOOKS / f"{chapter}.ipynb")))
    assert inferred == set(defaults(chapter)), set(defaults(chapter)) ^ inferred


@pytest.mark.parametrize(
    "change, match",
    [
        ({"shapes": ["2x3", "3by3"]}, "shapes must be strings"),
        ({"shapes": ["1x3"]}, "shapes must be strings"),
        ({"shapes": ["2x3x1"]}, "shapes must be strings"),
        ({"topk_k": 5}, r"parameter topk_k=5 is not allowed"),
        ({"correlations": [0.5, 1.0]}, "correlations must contain 0.0"),
        ({"correlations": [0.0]}, "and a correlation above 0"),
        ({"dims": [8, 32]}, "dims must contain 2"),
        ({"dims": [2]}, "and a dimension above 2"),
        ({"ortho_powers": [1.0]}, "a linear"),
        ({"ortho_coeffs": [0.0, 1.0]}, "all above 0"),
        ({"l1": 0.2}, "l1_coeffs must contain the value of l1"),
        ({"lr": 0.002}, "lrs the value of lr"),
        ({"wide": [1]}, r"parameter wide=\[1\] is not allowed"),
    ],
)
def test_chapter_03_rules(change, match):
    with pytest.raises(ValueError, match=match):
        check_chapter(defaults("03_toy_composition") | change, "03_toy_composition")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"l1": 0.3}, "must be values of relu_l1"),
        ({"topk_ks": [2, 4, 8]}, "the same number"),
        ({"ortho_claim_coeff": 0.5}, "must contain ortho_claim_coeff"),
        ({"ortho_powers": [2.0, 3.0]}, "a linear"),
        ({"ortho_powers": [1.0]}, "a linear"),
        ({"widths": [0.5, 0.75]}, "one width below 1 and one above"),
        ({"probe_ks": [1, 2]}, "probe_ks must hold 1 and probe_or_size"),
        ({"n_features": 4}, r"parameter n_features=4 is not allowed"),
    ],
)
def test_chapter_04_rules(change, match):
    with pytest.raises(ValueError, match=match):
        check_chapter(defaults("04_correlated_features") | change, "04_correlated_features")


def _presets():
    import yaml

    presets = yaml.safe_load((NOTEBOOKS / "presets.yaml").read_text()) or {}
    return [(ch, name) for ch, known in sorted(presets.items()) for name in sorted(known)]


def _setup_cells(chapter: str) -> tuple[str, str]:
    """The source of a chapter's ``parameters`` cell and of its validation cell (the first
    code cell after it that calls ``check_chapter``)."""
    cells = [c for c in json.loads((NOTEBOOKS / f"{chapter}.ipynb").read_text())["cells"]
             if c["cell_type"] == "code"]  # fmt: skip
    at = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    check = next(c for c in cells[at + 1 :] if "check_chapter(" in "".join(c["source"]))
    return "".join(cells[at]["source"]), "".join(check["source"])


@pytest.mark.parametrize(
    "chapter, preset",
    [(ch, "ci") for ch in chapters.chapters()] + _presets(),
)
def test_presets_start(chapter, preset):
    """Every chapter starts under every preset in notebooks/presets.yaml: its parameters
    cell, the preset's values injected after it (as papermill does) and its validation cell
    run as in the notebook, with the device forced to cpu (the paper preset may ask for
    CUDA, which CI lacks)."""
    parameters, validation = _setup_cells(chapter)
    namespace: dict = {}
    exec(parameters, namespace)  # noqa: S102 - the repository's own notebook
    namespace.update(chapters.preset_parameters(chapter, preset) | {"device": "cpu"})
    exec(validation, namespace)  # noqa: S102 - raises, naming the parameter, if it cannot start


def test_chapter_runner_refuses_bad_overrides_before_starting_a_kernel(tmp_path):
    out = tmp_path / "never.ipynb"
    with pytest.raises(
        SystemExit, match=r"chapter 01_sae_zoo, preset ci: unknown parameter\(s\) \['sed'\]"
    ):
        chapters.run("01_sae_zoo", out, overrides={"sed": 1})
    with pytest.raises(SystemExit, match="ks must be at most the narrowest d_sae"):
        chapters.run("01_sae_zoo", out, overrides={"ks": [2, 4, 400]})
    assert not out.exists()
