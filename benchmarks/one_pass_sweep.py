"""A sweep of SAEs trained on one pass over a cache against one after another.

Three TopK SAEs (widths 512, 1024, 2048; k 32) on the same activation cache (float32
safetensors shards with sha256, streamed through ``ShardedBatches`` with verification, as
``ActivationCache.batches`` does): ``sequential`` trains them one after another (each
reads the cache), ``one pass`` trains them with ``saelib.one_pass.fit_together`` (the
cache is read once; each batch serves all three). Both at the same thread count, after an
untimed 5-step warm-up; the modes alternate and each is timed ``--repeats`` times (the
minimum is reported). ``data`` is the
stream alone (read, verify, shuffle) for the same steps: what one pass can save, per SAE.

    .venv/bin/python benchmarks/one_pass_sweep.py            # writes results/one_pass_sweep.md
    .venv/bin/python benchmarks/one_pass_sweep.py --quick    # seconds; prints only
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from machine_info import cpu_model, memory_gib

from saelib.data import ShardedBatches, write_shards
from saelib.files import sha256_file
from saelib.one_pass import fit_together
from saelib.saes import SAEConfig, make_sae
from saelib.training import TrainConfig, Trainer

RESULTS = Path(__file__).parent / "results"


def trainers(args) -> list[Trainer]:
    cfg = TrainConfig(n_steps=args.steps, lr=4e-4, progress=False)
    return [
        Trainer(make_sae(SAEConfig(d_in=args.d_in, d_sae=w, architecture="topk", k=32)), cfg)
        for w in args.widths
    ]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--d-in", type=int, default=256)
    p.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--rows", type=int, default=65_536, help="rows in the cache")
    p.add_argument("--rows-per-shard", type=int, default=16_384)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small sizes, prints only")
    p.add_argument("--markdown-only", action="store_true", help="rebuild the .md from the .json")
    args = p.parse_args()
    if args.markdown_only:
        result = json.loads((RESULTS / "one_pass_sweep.json").read_text())
        (RESULTS / "one_pass_sweep.md").write_text(markdown(result))
        return
    if args.quick:
        args.widths, args.rows, args.rows_per_shard, args.steps = [64, 128], 4096, 1024, 20
        args.d_in, args.batch, args.repeats = 32, 128, 1
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        x = torch.randn(args.rows, args.d_in, generator=torch.Generator().manual_seed(0))
        paths = write_shards(x, tmp, args.rows_per_shard)
        sums = [sha256_file(path) for path in paths]

        def batches():
            return ShardedBatches(paths, args.batch, seed=0, dtype=torch.float32, sha256=sums)

        def sequential():
            for t in trainers(args):
                t.fit(batches())

        def one_pass():
            fit_together(trainers(args), batches(), progress=False)

        def data():
            for _ in itertools.islice(batches(), args.steps):
                pass

        warm = argparse.Namespace(**{**vars(args), "steps": 5})  # first calls, untimed
        fit_together(trainers(warm), batches(), progress=False)
        load_before = os.getloadavg()
        times = {"sequential": [], "one pass": [], "data": []}
        for _ in range(args.repeats):
            for name, fn in (("sequential", sequential), ("one pass", one_pass), ("data", data)):
                times[name].append(timed(fn))
        load_after = os.getloadavg()
    best = {k: min(v) for k, v in times.items()}
    result = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("quick", "markdown_only")},
        "seconds": times,
        "best": best,
        "speedup": best["sequential"] / best["one pass"],
        "load_1min_before_after": [load_before[0], load_after[0]],
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib(),
        "torch": torch.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    print(json.dumps(result, indent=1))
    if args.quick:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "one_pass_sweep.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "one_pass_sweep.md").write_text(markdown(result))


def markdown(result: dict) -> str:
    """The results table and its reading, from the JSON the run wrote (no typed numbers)."""
    cfg, best, times = result["settings"], result["best"], result["seconds"]
    n = len(cfg["widths"])
    before, after = result["load_1min_before_after"]
    saved = (n - 1) * best["data"]  # what one pass can save: the stream, once per extra SAE
    gained = best["sequential"] - best["one pass"]

    def row(label: str, key: str) -> str:
        return f"| {label} | {best[key]:.2f} | {', '.join(f'{t:.2f}' for t in times[key])} |"

    flags = " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in cfg.items()
    )
    env = f"OMP_WAIT_POLICY={result['omp_wait_policy']} " if result.get("omp_wait_policy") else ""
    return f"""`{env}.venv/bin/python benchmarks/one_pass_sweep.py {flags}`: {n} TopK SAEs (k 32,
widths {", ".join(map(str, cfg["widths"]))}) on d_in {cfg["d_in"]}, {cfg["steps"]} steps of
batch {cfg["batch"]}, from a float32 cache of {cfg["rows"]} rows in shards of
{cfg["rows_per_shard"]} (sha256 verified at every read); torch threads: {cfg["threads"]} in
both modes. Minimum of {cfg["repeats"]} alternating runs after a warm-up. Machine:
{result["cpu"]}, {result["cores"]} cores, {result["memory_gib"]} GiB, torch {result["torch"]};
1-minute load average {before:.1f} before, {after:.1f} after (other jobs shared the machine).

| mode | seconds (min) | all runs |
|---|---|---|
{row(f"sequential ({n} fits, {n} reads of the cache)", "sequential")}
{row("one pass (`fit_together`, 1 read)", "one pass")}
{row(f"the data stream alone ({cfg['steps']} batches)", "data")}

Speed-up of one pass over sequential: **{result["speedup"]:.2f}x** ({gained:.2f} s). The
SAEs' own steps are the same work in both modes; what one pass removes is the stream for
every SAE but the first: {n - 1} x {best["data"]:.2f} s = {saved:.2f} s here, i.e.
{saved / best["sequential"]:.0%} of the sequential time. Any difference beyond that is not
explained by the stream's cost, and this benchmark does not isolate its cause (per-fit
set-up, caches, the other jobs on the machine).
"""


if __name__ == "__main__":
    main()
