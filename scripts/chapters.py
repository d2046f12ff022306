"""Run the book's chapters with papermill.

    python scripts/chapters.py list
    python scripts/chapters.py run 01_sae_zoo --preset paper -p seed 3 -p device cuda
    python scripts/chapters.py book            # every chapter at the ci preset into book/

A chapter's notebook defaults are its ``ci`` preset; ``notebooks/presets.yaml`` holds the
overrides of the other presets (``paper``). ``-p NAME VALUE`` overrides one parameter;
VALUE is read as YAML with numbers as people type them (``saelib.parameters.parse_value``):
``-p lr 1e-3``, ``-p seed 3``, ``-p ks "[2, 4, 8]"``, ``-p normalize true``. A failing
chapter stops the run with the chapter, the cell and the error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import papermill
import yaml
from papermill.exceptions import PapermillExecutionError

from saelib.parameters import check_chapter, parse_value, versions

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS, BOOK = ROOT / "notebooks", ROOT / "book"
PRESETS_FILE = NOTEBOOKS / "presets.yaml"


def chapters() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def preset_parameters(chapter: str, preset: str) -> dict:
    presets = yaml.safe_load(PRESETS_FILE.read_text()) or {}
    known = presets.get(chapter, {})
    if preset == "ci":
        return dict(known.get("ci") or {})
    if preset not in known:
        allowed = sorted({"ci", *known})
        raise SystemExit(f"--preset {preset!r} is not defined for {chapter}; allowed: {allowed}")
    return dict(known[preset] or {})


def notebook_defaults(chapter: str) -> dict:
    """The values of the chapter's ``parameters`` cell (its ci preset)."""
    cells = json.loads((NOTEBOOKS / f"{chapter}.ipynb").read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    values: dict = {}
    exec("".join(cell["source"]), {}, values)  # noqa: S102 - the repository's own notebook
    return values


def run(chapter: str, output: Path, preset: str = "ci", overrides: dict | None = None) -> float:
    """Execute one chapter into ``output``; return seconds; exit with a clear message on error.

    The parameters are checked against the chapter's schema before a kernel starts, so a
    misspelt name or a value out of range fails at once, naming the parameter.
    """
    if chapter not in chapters():
        raise SystemExit(f"unknown chapter {chapter!r}; chapters: {chapters()}")
    params = preset_parameters(chapter, preset) | (overrides or {})
    try:
        check_chapter(notebook_defaults(chapter) | params, chapter)
    except ValueError as err:
        raise SystemExit(f"chapter {chapter}, preset {preset}: {err}") from None
    print(f"[{chapter}] preset={preset} parameters={params} -> {output}", flush=True)
    print(f"[{chapter}] {versions()}", flush=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{chapter}.ipynb"),
            str(output),
            parameters=params,
            kernel_name="python3",
            cwd=str(ROOT),
            progress_bar=False,
        )
    except PapermillExecutionError as err:
        raise SystemExit(
            f"chapter {chapter} failed in cell {err.cell_index} (execution count "
            f"{err.exec_count}): {err.ename}: {err.evalue}\n  see the executed copy {output}"
        ) from None
    seconds = time.perf_counter() - start
    print(f"[{chapter}] done in {seconds:.0f} s", flush=True)
    return seconds


def _overrides(pairs: list[list[str]]) -> dict:
    return {name: parse_value(value) for name, value in pairs or []}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the chapters")
    one = sub.add_parser("run", help="run one chapter")
    one.add_argument("chapter")
    one.add_argument("--preset", default="ci")
    one.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"))
    one.add_argument("--out", type=Path, help="executed notebook (default: runs/<chapter>.ipynb)")
    every = sub.add_parser("book", help="run every chapter at a preset into book/")
    every.add_argument("--preset", default="ci")
    args = parser.parse_args(argv)

    if args.command == "book":  # progress bars go to stderr, noise in the rendered book
        os.environ.setdefault("TQDM_DISABLE", "1")
    if args.command == "list":
        print("\n".join(chapters()))
    elif args.command == "run":
        out = args.out or ROOT / "runs" / f"{args.chapter}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        run(args.chapter, out, args.preset, _overrides(args.p))
    else:
        total = {name: run(name, BOOK / f"{name}.ipynb", args.preset) for name in chapters()}
        print("chapter times: " + ", ".join(f"{k} {v:.0f} s" for k, v in total.items()))


if __name__ == "__main__":
    sys.exit(main())
