"""Training throughput: saelib against SAELens, in the same run, on the same data.

    python benchmarks/train_throughput.py            # sets up benchmarks/.venv-saelens too
    python benchmarks/train_throughput.py --quick    # smoke run: small SAEs, few steps

Every measurement runs in its own subprocess (so peak memory is per configuration):
saelib's in this interpreter with the repository on PYTHONPATH, SAELens's in the venv
that ``setup_saelens_venv.sh`` makes (SAELens pins TransformerLens < 4, saelib uses 4).
Both get the same Gaussian batches (one seeded generator, the same torch version), the
same thread count, Adam, and the same dead-latent mask for aux-k. A step is timed from
the batch in hand to the optimizer step done; tokens/s is the batch size over the median
step time after warm-up. Peak memory is the subprocess's ``ru_maxrss``; ``base_rss`` is
its RSS after imports and data, before the SAE exists.

Writes ``results/train_throughput.json`` (machine, versions, every step time) and
``results/train_throughput.md`` (the table the book includes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from machine_info import cpu_model, memory_gib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAELENS_VENV = HERE / ".venv-saelens"

# name -> (library, architecture, aux-k, SAELens sparse activations)
CASES = {
    "topk": ("saelib", "topk", False, None),
    "topk_auxk": ("saelib", "topk", True, None),
    "relu_l1": ("saelib", "relu", False, None),
    "sl_topk_dense": ("saelens", "topk", False, False),
    "sl_topk_sparse": ("saelens", "topk", False, True),
    "sl_topk_auxk": ("saelens", "topk", True, None),  # its faster TopK mode, set at run time
    "sl_relu_l1": ("saelens", "relu", False, None),
}


# -- the worker: one library, one configuration, one process ---------------------------
def batches(n_batches: int, batch: int, d_in: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, d_in, generator=g) for _ in range(n_batches)]


def dead_pattern(d_sae: int, fraction: float):
    """Bool [d_sae]: every latent whose index times fraction crosses an integer (spread)."""
    import torch

    i = torch.arange(d_sae)
    return (torch.floor((i + 1) * fraction) - torch.floor(i * fraction)) > 0


def saelib_stepper(a):
    import torch

    from saelib.saes import SAEConfig, make_sae
    from saelib.training import TrainConfig, Trainer

    topk = a["arch"] == "topk"
    cfg = SAEConfig(
        d_in=a["d_in"], d_sae=a["d_sae"], architecture=a["arch"], k=a["k"] if topk else None
    )
    train = TrainConfig(
        n_steps=10**9, lr=1e-4, progress=False, log_every=10**9,
        sparsity_coeff=0.0 if topk else 5.0, normalize_decoder=topk,
        aux_k=a["d_in"] // 2 if a["aux"] else None, dead_after_tokens=1,
    )  # fmt: skip
    trainer = Trainer(make_sae(cfg), train)
    trainer._initialise(a["data"][0])
    big = torch.full((a["d_sae"],), 10**9, dtype=torch.long)
    dead = torch.where(a["dead"], big, torch.zeros_like(big))

    def step(x):
        if a["aux"]:
            trainer.tokens_since_fired.copy_(dead)  # the same dead set every step
        trainer.train_step(x)

    return step


def saelens_stepper(a):
    import torch
    from sae_lens import (
        LoggingConfig,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    if a["arch"] == "topk":
        cfg = TopKTrainingSAEConfig(
            d_in=a["d_in"], d_sae=a["d_sae"], k=a["k"], device="cpu",
            use_sparse_activations=bool(a["sparse"]),
            # Its sparse mode fails in backward (aten::view on SparseCPU) with the
            # decoder-norm rescaling on, so that mode runs without it.
            rescale_acts_by_decoder_norm=not a["sparse"],
        )  # fmt: skip
        sae = TopKTrainingSAE(cfg)
    else:
        cfg = StandardTrainingSAEConfig(
            d_in=a["d_in"], d_sae=a["d_sae"], l1_coefficient=5.0, device="cpu"
        )
        sae = StandardTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=10**12, train_batch_size_samples=a["batch"], lr=1e-4, lr_end=1e-4,
        device="cpu", dead_feature_window=1000, logger=LoggingConfig(log_to_wandb=False),
    )  # fmt: skip
    trainer = SAETrainer(trainer_cfg, sae, data_provider=iter(()))
    dead = torch.where(a["dead"], 10.0**9, 0.0) if a["aux"] else torch.zeros(a["d_sae"])

    def step(x):
        trainer.n_forward_passes_since_fired.copy_(dead)  # aux-k only where dead
        trainer._train_step(sae, x)  # SAELens's own step: forward, aux, clip, Adam

    return step


def worker(a: dict) -> dict:
    import torch

    torch.set_num_threads(a["threads"])
    torch.manual_seed(a["seed"])
    a["data"] = batches(a["n_batches"], a["batch"], a["d_in"], a["seed"])
    a["dead"] = dead_pattern(a["d_sae"], a["dead_fraction"])
    base_rss = _rss_now()
    step = (saelib_stepper if a["library"] == "saelib" else saelens_stepper)(a)
    times = []
    for i in range(a["warmup"] + a["steps"]):
        x = a["data"][i % len(a["data"])]
        start = time.perf_counter()
        step(x)
        times.append(time.perf_counter() - start)
    measured = times[a["warmup"] :]
    median = statistics.median(measured)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {
        "tokens_per_s": a["batch"] / median,
        "median_step_s": median,
        "step_s": times,
        "peak_rss_bytes": peak,
        "base_rss_bytes": base_rss,
        "torch": torch.__version__,
        "library_version": _library_version(a["library"]),
    }


def ceiling(a: dict) -> dict:
    """fp32 GFLOP/s of the encoder's product [batch, d_in] @ [d_in, d_sae] + bias."""
    import torch

    torch.set_num_threads(a["threads"])
    x, w = torch.randn(a["batch"], a["d_in"]), torch.randn(a["d_in"], a["d_sae"])
    b = torch.zeros(a["d_sae"])
    out = torch.empty(a["batch"], a["d_sae"])
    times = []
    for _ in range(a["repeats"] + 1):
        start = time.perf_counter()
        torch.addmm(b, x, w, out=out)
        times.append(time.perf_counter() - start)
    median = statistics.median(times[1:])
    return {"gflops": 2 * a["batch"] * a["d_in"] * a["d_sae"] / median / 1e9, "times": times}


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _library_version(library: str) -> str:
    from importlib.metadata import version

    return version("sae-lens" if library == "saelens" else "torch")


# -- the driver ----------------------------------------------------------------------
def run_sub(python: str, payload: dict, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    env.update({v: str(payload["threads"]) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    proc = subprocess.run(
        [python, __file__, f"--{mode}", json.dumps(payload)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} {payload.get('library')} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def setup_saelens(args) -> str:
    python = str(SAELENS_VENV / "bin" / "python")
    if not args.no_setup:
        subprocess.run(["bash", str(HERE / "setup_saelens_venv.sh")], check=True)
    if not Path(python).exists():
        sys.exit(f"no SAELens venv at {SAELENS_VENV}; run benchmarks/setup_saelens_venv.sh")
    return python


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--ceiling", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="smoke run: d_sae 1024, 3+3 steps")
    p.add_argument("--d-sae", type=int, nargs="+", default=[4608, 18432])
    p.add_argument("--d-in", type=int, default=576)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dead-fraction", type=float, default=0.25, help="aux-k dead latents")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-setup", action="store_true", help="do not run setup_saelens_venv.sh")
    p.add_argument("--out", default=str(HERE / "results" / "train_throughput.json"))
    p.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the JSON")
    args = p.parse_args()
    if args.worker or args.ceiling:
        payload = json.loads(args.worker or args.ceiling)
        print(json.dumps(worker(payload) if args.worker else ceiling(payload)))
        return
    if args.markdown_only:
        write_markdown(json.loads(Path(args.out).read_text()), Path(args.out).with_suffix(".md"))
        return
    if args.quick:
        args.d_sae, args.steps, args.warmup = [1024], 3, 2
        args.out = args.out if "--out" in sys.argv else None
    saelens_python = setup_saelens(args)
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "ceiling")},
        "rows": [],
        "ceiling": {},
    }
    for d_sae in args.d_sae:
        common = {
            "d_in": args.d_in, "d_sae": d_sae, "batch": args.batch, "k": args.k,
            "threads": args.threads, "seed": args.seed, "n_batches": 4,
            "steps": args.steps, "warmup": args.warmup, "dead_fraction": args.dead_fraction,
        }  # fmt: skip
        c = run_sub(sys.executable, dict(common, repeats=5), "ceiling")
        results["ceiling"][str(d_sae)] = c
        print(f"d_sae {d_sae}: matmul ceiling {c['gflops']:.1f} GFLOP/s", flush=True)
        fastest_sl_topk = None
        for name in args.cases:
            library, arch, aux, sparse = CASES[name]
            if name == "sl_topk_auxk":
                sparse = fastest_sl_topk
            payload = dict(common, library=library, arch=arch, aux=aux, sparse=sparse)
            python = sys.executable if library == "saelib" else saelens_python
            load = os.getloadavg()[0]
            r = run_sub(python, payload, "worker")
            row = {"case": name, "library": library, "arch": arch, "aux_k": aux,
                   "saelens_sparse": sparse, "d_sae": d_sae, "load_before": load, **r}  # fmt: skip
            results["rows"].append(row)
            if name in ("sl_topk_dense", "sl_topk_sparse"):
                best = max(
                    (x for x in results["rows"] if x["d_sae"] == d_sae and x["case"] in
                     ("sl_topk_dense", "sl_topk_sparse")), key=lambda x: x["tokens_per_s"],
                )  # fmt: skip
                fastest_sl_topk = best["saelens_sparse"]
            if args.out:  # after every row, so an interrupted run keeps what it measured
                save(results, Path(args.out))
            gib = r["peak_rss_bytes"] / 2**30
            print(f"  {name:15s} {r['tokens_per_s']:8.0f} tok/s  peak {gib:.2f} GiB", flush=True)
    print(table(results))


def save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    write_markdown(results, out.with_suffix(".md"))


def _row(results, d_sae, case):
    return next((r for r in results["rows"] if r["d_sae"] == d_sae and r["case"] == case), None)


def table(results: dict) -> str:
    """Markdown: one line per (d_sae, SAE), saelib against SAELens's fastest mode."""
    d_in = results["settings"]["d_in"]
    lines = [
        "| d_sae | SAE | saelib tok/s | SAELens tok/s (mode) | ratio | saelib / limit "
        "| peak GiB saelib / SAELens |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    pairs = [
        ("TopK", "topk", ["sl_topk_dense", "sl_topk_sparse"]),
        ("TopK + aux-k", "topk_auxk", ["sl_topk_auxk"]),
        ("ReLU/L1", "relu_l1", ["sl_relu_l1"]),
    ]
    for d_sae in results["settings"]["d_sae"]:
        if str(d_sae) not in results["ceiling"]:
            continue
        limit = results["ceiling"][str(d_sae)]["gflops"] * 1e9 / (2 * d_in * d_sae)
        for label, ours, theirs in pairs:
            mine = _row(results, d_sae, ours)
            others = [r for r in (_row(results, d_sae, c) for c in theirs) if r]
            if mine is None or not others:
                continue
            best = max(others, key=lambda r: r["tokens_per_s"])
            mode = {"sl_topk_dense": "dense", "sl_topk_sparse": "sparse"}.get(best["case"], "")
            if best["case"] == "sl_topk_auxk":
                mode = "sparse" if best["saelens_sparse"] else "dense"
            mode = f" ({mode})" if mode else ""
            lines.append(
                f"| {d_sae:,} | {label} | {mine['tokens_per_s']:,.0f} | "
                f"{best['tokens_per_s']:,.0f}{mode} | "
                f"{mine['tokens_per_s'] / best['tokens_per_s']:.2f}x | "
                f"{mine['tokens_per_s'] / limit:.0%} | "
                f"{mine['peak_rss_bytes'] / 2**30:.2f} / {best['peak_rss_bytes'] / 2**30:.2f} |"
            )
    return "\n".join(lines)


def write_markdown(results: dict, path: Path) -> None:
    m, s = results["machine"], results["settings"]
    ceil = ", ".join(
        f"{c['gflops']:.0f} GFLOP/s (d_sae {int(d):,})" for d, c in results["ceiling"].items()
    )
    other = [r for r in results["rows"] if r["case"] in ("sl_topk_dense", "sl_topk_sparse")]
    modes = "; ".join(
        f"d_sae {r['d_sae']:,} {r['case'][8:]} {r['tokens_per_s']:,.0f} tok/s" for r in other
    )
    loads = [r["load_before"] for r in results["rows"]]
    text = f"""{table(results)}

Measured {results["date"]} on {m["cpu"] or "an unnamed CPU"} ({m["logical_cpus"]} logical
CPUs, {m["memory_gib"]} GiB), {s["threads"]} threads, torch {results["rows"][0]["torch"]},
SAELens {next((r["library_version"] for r in results["rows"] if r["library"] == "saelens"), "-")}.
d_in {s["d_in"]}, batch {s["batch"]} tokens, k {s["k"]}, Adam, Gaussian activations;
median of {s["steps"]} steps after {s["warmup"]} warm-up steps. Aux-k: k_aux = d_in / 2 on a
fixed {s["dead_fraction"]:.0%} of latents marked dead. Matmul ceiling (fp32 encoder
product): {ceil}. "limit" is that ceiling over the encoder's 2 d_in d_sae FLOP per token.
SAELens TopK modes: {modes}. Load average before the runs: {min(loads):.1f} to
{max(loads):.1f} (other jobs shared the machine when it is above ~0.5).
"""
    path.write_text(text + targets(results))


def targets(results: dict) -> str:
    """The issue's targets, checked on these numbers (met / not met, never asserted)."""
    lines = ["", "| target | measured | met |", "|---|---:|:-:|"]
    for d_sae in results["settings"]["d_sae"]:
        get = {c: _row(results, d_sae, c) for c in CASES}
        sl_topk = [get[c] for c in ("sl_topk_dense", "sl_topk_sparse") if get[c]]
        if get["topk"] and sl_topk:
            ratio = get["topk"]["tokens_per_s"] / max(r["tokens_per_s"] for r in sl_topk)
            lines.append(_target(f"TopK d_sae {d_sae:,}: >= 3x SAELens's fastest", ratio, 3))
        if get["topk"] and get["topk_auxk"]:
            over = get["topk"]["tokens_per_s"] / get["topk_auxk"]["tokens_per_s"] - 1
            lines.append(
                f"| aux-k d_sae {d_sae:,}: <= 10% slower than TopK | {over:.0%} "
                f"| {'yes' if over <= 0.10 else 'no'} |"
            )
        if get["relu_l1"] and get["sl_relu_l1"]:
            ratio = get["relu_l1"]["tokens_per_s"] / get["sl_relu_l1"]["tokens_per_s"]
            lines.append(_target(f"ReLU/L1 d_sae {d_sae:,}: >= 1.5x SAELens", ratio, 1.5))
        pairs = [("topk", sl_topk), ("topk_auxk", [get["sl_topk_auxk"]]),
                 ("relu_l1", [get["sl_relu_l1"]])]  # fmt: skip
        for ours, theirs in pairs:
            theirs = [r for r in theirs if r]
            if get[ours] and theirs:
                mine, other = get[ours]["peak_rss_bytes"], min(r["peak_rss_bytes"] for r in theirs)
                met = "yes" if mine <= other else "no"
                lines.append(
                    f"| {ours} d_sae {d_sae:,}: peak memory <= SAELens's | "
                    f"{mine / 2**30:.2f} / {other / 2**30:.2f} GiB | {met} |"
                )
    return "\n".join(lines) + "\n"


def _target(label: str, ratio: float, goal: float) -> str:
    return f"| {label} | {ratio:.2f}x | {'yes' if ratio >= goal else 'no'} |"


if __name__ == "__main__":
    main()
