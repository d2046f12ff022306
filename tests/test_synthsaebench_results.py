"""The committed SynthSAEBench results: the markdown the book includes is the one the
benchmark writes from the committed JSON (no number typed by hand), and its table shows,
for every architecture and both libraries, the run whose L0 is closest to k."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
RESULTS = BENCH / "results" / "synthsaebench_ci.json"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import synthsaebench
    finally:
        sys.path.remove(str(BENCH))
    return synthsaebench


@pytest.fixture(scope="module")
def results():
    if not RESULTS.exists():
        pytest.fail(f"{RESULTS} is missing: run python benchmarks/synthsaebench.py")
    return json.loads(RESULTS.read_text())


def test_markdown_is_generated_from_the_json(bench, results):
    written = RESULTS.with_suffix(".md").read_text()
    assert written == bench.markdown(results), (
        "benchmarks/results/synthsaebench_ci.md differs from the JSON's table: run "
        "python benchmarks/synthsaebench.py --markdown-only"
    )


def test_table_rows_are_the_closest_l0(bench, results):
    rows = bench.rows(results)
    assert {(r["arch"], r["library"]) for r in rows} == {
        (a, lib) for a in bench.ARCHS for lib in ("saelib", "saelens")
    }
    for r in rows:
        grid = [n for n in results["scores"] if n.startswith(f"{r['library']}/{r['arch']}")]
        gaps = [abs(results["scores"][n]["sae_l0"] - results["k"]) for n in grid]
        assert abs(r["l0"] - results["k"]) == min(gaps)


def test_book_page_includes_the_table():
    page = (BENCH.parent / "book" / "synthsaebench.md").read_text()
    assert "../benchmarks/results/synthsaebench_ci.md" in page
    assert "book/synthsaebench" in (BENCH.parent / "_toc.yml").read_text()
