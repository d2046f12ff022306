"""Command line.

python -m saelib.probing.tasks build --out DIR [--families a,b] [--cap N] [--seed S]
python -m saelib.probing.tasks baseline --out DIR    # bag-of-words test AUC per task
"""

from __future__ import annotations

import argparse
import time

from saelib.probing.tasks.builder import DEFAULT_FAMILIES, FAMILIES, build, default_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m saelib.probing.tasks")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the probing tasks and their manifest")
    b.add_argument("--out", default=None, help=f"output folder (default {default_dir()})")
    b.add_argument(
        "--families",
        default=",".join(DEFAULT_FAMILIES),
        help=f"comma-separated, among {sorted(FAMILIES)} (kantamneni: the paper's datasets)",
    )
    b.add_argument("--cap", type=int, default=2000, help="maximum examples per class")
    b.add_argument("--seed", type=int, default=0)
    bl = sub.add_parser("baseline", help="TF-IDF + logistic regression test AUC per task")
    bl.add_argument("--out", default=None, help="folder of a build (default: the cache's)")
    bl.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "baseline":
        _baseline(args.out, args.seed)
        return
    start = time.perf_counter()
    manifest = build(args.out, args.families.split(","), cap=args.cap, seed=args.seed)
    print(f"built {len(manifest['tasks'])} tasks in {time.perf_counter() - start:.0f} s:")
    for name, t in manifest["tasks"].items():
        print(f"  {name:24s} {t['n_per_class']:5d} per class, {t['n_groups']:5d} groups")
    for name, why in manifest["skipped"].items():
        print(f"  skipped {name}: {why}")


def _baseline(out, seed: int) -> None:
    from saelib.probing.tasks.baseline import bow_baseline
    from saelib.probing.tasks.load import available_tasks, load_task

    print(f"{'task':24s} {'val AUC':>8s} {'test AUC':>8s}")
    for name in available_tasks(out):
        r = bow_baseline(load_task(name, out), seed=seed)
        print(f"{name:24s} {r['val_auc']:8.3f} {r['test_auc']:8.3f}", flush=True)


if __name__ == "__main__":
    main()
