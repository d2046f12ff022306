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

# name -> (library, architecture, aux-k, SAELens sparse activations, bf16)
# bf16: saelib's TrainConfig(precision="bfloat16"), SAELens's SAETrainerConfig(autocast=True).
CASES = {
    "topk": ("saelib", "topk", False, None, False),
    "topk_auxk": ("saelib", "topk", True, None, False),
    "relu_l1": ("saelib", "relu", False, None, False),
    "topk_bf16": ("saelib", "topk", False, None, True),
    "relu_l1_bf16": ("saelib", "relu", False, None, True),
    "sl_topk_dense": ("saelens", "topk", False, False, False),
    "sl_topk_sparse": ("saelens", "topk", False, True, False),
    "sl_topk_auxk": ("saelens", "topk", True, None, False),  # its faster TopK mode, at run time
    "sl_relu_l1": ("saelens", "relu", False, None, False),
    "sl_topk_autocast": ("saelens", "topk", False, None, True),  # its faster TopK mode
    "sl_relu_l1_autocast": ("saelens", "relu", False, None, True),
}
AUX_CASES = ("topk_auxk", "sl_topk_auxk")  # measured at every --dead-fractions value


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
        precision="bfloat16" if a["bf16"] else "float32",
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
        autocast=bool(a["bf16"]),
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
    """GFLOP/s of the encoder's product [batch, d_in] @ [d_in, d_sae] + bias, fp32 and bf16,
    into a reused output (the median of ``repeats`` after one warm-up)."""
    import torch

    torch.set_num_threads(a["threads"])
    flop = 2 * a["batch"] * a["d_in"] * a["d_sae"]
    x, w = torch.randn(a["batch"], a["d_in"]), torch.randn(a["d_in"], a["d_sae"])
    result = {}
    for key, dtype in (("gflops", torch.float32), ("gflops_bf16", torch.bfloat16)):
        xd, wd, b = x.to(dtype), w.to(dtype), torch.zeros(a["d_sae"], dtype=dtype)
        out = torch.empty(a["batch"], a["d_sae"], dtype=dtype)
        times = []
        for _ in range(a["repeats"] + 1):
            start = time.perf_counter()
            torch.addmm(b, xd, wd, out=out)
            times.append(time.perf_counter() - start)
        result[key] = flop / statistics.median(times[1:]) / 1e9
        result[f"times_{key}"] = times
    return result


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _library_version(library: str) -> str:
    from importlib.metadata import version

    return version("sae-lens" if library == "saelens" else "torch")


# -- the driver ----------------------------------------------------------------------
# jemalloc keeps freed memory for reuse (Intel's PyTorch CPU tuning guide's settings): a
# fresh [batch, d_sae] tensor is then not page-faulted in again on every step.
JEMALLOC_CONF = (
    "oversize_threshold:1,background_thread:true,metadata_thp:auto,"
    "dirty_decay_ms:-1,muzzy_decay_ms:-1"
)


def run_sub(python: str, payload: dict, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    env.update({v: str(payload["threads"]) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    if payload.get("preload"):  # the same allocator for both libraries
        env.update(LD_PRELOAD=payload["preload"], MALLOC_CONF=JEMALLOC_CONF)
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
    p.add_argument(
        "--dead-fractions", type=float, nargs="+", default=[0.01, 0.05, 0.25],
        help="fractions of latents marked dead for the aux-k cases",
    )  # fmt: skip
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--preload", default="",
        help="an allocator to LD_PRELOAD into every run, e.g. /usr/lib/x86_64-linux-gnu/"
        "libjemalloc.so.2 (Debian's libjemalloc2); with MALLOC_CONF set for jemalloc",
    )  # fmt: skip
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
    if args.preload and not Path(args.preload).is_file():
        sys.exit(f"--preload {args.preload}: no such file (apt-get install libjemalloc2)")
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
            "threads": args.threads, "seed": args.seed, "n_batches": 4, "preload": args.preload,
            "steps": args.steps, "warmup": args.warmup,
        }  # fmt: skip
        c = run_sub(sys.executable, dict(common, repeats=5), "ceiling")
        results["ceiling"][str(d_sae)] = c
        print(f"d_sae {d_sae}: ceiling {c['gflops']:.0f} GFLOP/s fp32, {c['gflops_bf16']:.0f} bf16")
        fastest_sl_topk = None
        runs = [(name, f) for name in args.cases
                for f in (args.dead_fractions if name in AUX_CASES else [None])]  # fmt: skip
        for name, fraction in runs:
            library, arch, aux, sparse, bf16 = CASES[name]
            if name in ("sl_topk_auxk", "sl_topk_autocast"):
                sparse = fastest_sl_topk
            payload = dict(common, library=library, arch=arch, aux=aux, sparse=sparse, bf16=bf16,
                           dead_fraction=fraction or 0.0)  # fmt: skip
            python = sys.executable if library == "saelib" else saelens_python
            load = os.getloadavg()[0]
            r = run_sub(python, payload, "worker")
            row = {"case": name, "library": library, "arch": arch, "aux_k": aux, "bf16": bf16,
                   "saelens_sparse": sparse, "d_sae": d_sae, "dead_fraction": fraction,
                   "load_before": load, **r}  # fmt: skip
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
            label = name if fraction is None else f"{name} {fraction:.0%} dead"
            print(f"  {label:24s} {r['tokens_per_s']:8.0f} tok/s  peak {gib:.2f} GiB", flush=True)
    print(table(results))


def save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    write_markdown(results, out.with_suffix(".md"))


def _row(results, d_sae, case, fraction=None):
    """The row of ``case`` at ``d_sae`` (and, for aux-k, at that dead fraction)."""
    return next(
        (r for r in results["rows"] if r["d_sae"] == d_sae and r["case"] == case
         and r.get("dead_fraction") == fraction),
        None,
    )  # fmt: skip


def _fastest(results, d_sae, cases, fraction=None):
    rows = [r for r in (_row(results, d_sae, c, fraction) for c in cases) if r]
    return max(rows, key=lambda r: r["tokens_per_s"]) if rows else None


def _limit(results, d_sae, bf16=False):
    """Tokens/s if the step cost only the encoder's product at the measured ceiling."""
    c = results["ceiling"][str(d_sae)]
    gflops = c.get("gflops_bf16", c["gflops"]) if bf16 else c["gflops"]
    return gflops * 1e9 / (2 * results["settings"]["d_in"] * d_sae)


def _pairs(results):
    """(label, saelib case, SAELens cases, dead fraction) for every table line."""
    pairs = [("TopK", "topk", ["sl_topk_dense", "sl_topk_sparse"], None)]
    for f in results["settings"].get("dead_fractions", [0.25]):
        pairs.append((f"TopK + aux-k, {f:.0%} dead", "topk_auxk", ["sl_topk_auxk"], f))
    pairs += [
        ("ReLU/L1", "relu_l1", ["sl_relu_l1"], None),
        ("TopK, bf16", "topk_bf16", ["sl_topk_autocast"], None),
        ("ReLU/L1, bf16", "relu_l1_bf16", ["sl_relu_l1_autocast"], None),
    ]
    return pairs


def _mode(row) -> str:
    if row["library"] != "saelens" or row["arch"] != "topk":
        return ""
    return " (sparse)" if row["saelens_sparse"] else " (dense)"


def table(results: dict) -> str:
    """Markdown: one line per (d_sae, SAE), saelib against SAELens's fastest mode."""
    lines = [
        "| d_sae | SAE | saelib tok/s | SAELens tok/s (mode) | ratio | saelib / limit "
        "| peak GiB saelib / SAELens |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for d_sae in results["settings"]["d_sae"]:
        if str(d_sae) not in results["ceiling"]:
            continue
        for label, ours, theirs, fraction in _pairs(results):
            mine = _row(results, d_sae, ours, fraction)
            best = _fastest(results, d_sae, theirs, fraction)
            if mine is None:
                continue
            limit = _limit(results, d_sae, bf16=mine.get("bf16", False))
            other = "-" if best is None else f"{best['tokens_per_s']:,.0f}{_mode(best)}"
            ratio = "-" if best is None else f"{mine['tokens_per_s'] / best['tokens_per_s']:.2f}x"
            peak = f"{mine['peak_rss_bytes'] / 2**30:.2f}"
            peak += "" if best is None else f" / {best['peak_rss_bytes'] / 2**30:.2f}"
            lines.append(
                f"| {d_sae:,} | {label} | {mine['tokens_per_s']:,.0f} | {other} | {ratio} | "
                f"{mine['tokens_per_s'] / limit:.0%} | {peak} |"
            )
    return "\n".join(lines)


def write_markdown(results: dict, path: Path) -> None:
    m, s = results["machine"], results["settings"]
    ceil = "; ".join(
        f"d_sae {int(d):,}: {c['gflops']:.0f} GFLOP/s fp32"
        + (f", {c['gflops_bf16']:.0f} bf16" if "gflops_bf16" in c else "")
        for d, c in results["ceiling"].items()
    )
    other = [r for r in results["rows"] if r["case"] in ("sl_topk_dense", "sl_topk_sparse")]
    modes = "; ".join(
        f"d_sae {r['d_sae']:,} {r['case'][8:]} {r['tokens_per_s']:,.0f} tok/s" for r in other
    )
    loads = [r["load_before"] for r in results["rows"]]
    fractions = ", ".join(f"{f:.0%}" for f in s.get("dead_fractions", [0.25]))
    preload = s.get("preload")
    allocator = f"`{preload}` (LD_PRELOAD, for both libraries)" if preload else "glibc's"
    text = f"""{table(results)}

Measured {results["date"]} on {m["cpu"] or "an unnamed CPU"} ({m["logical_cpus"]} logical
CPUs, {m["memory_gib"]} GiB), {s["threads"]} threads for every run of both libraries, torch
{results["rows"][0]["torch"]},
SAELens {next((r["library_version"] for r in results["rows"] if r["library"] == "saelens"), "-")}.
d_in {s["d_in"]}, batch {s["batch"]} tokens, k {s["k"]}, Adam, Gaussian activations;
median of {s["steps"]} steps after {s["warmup"]} warm-up steps; memory allocator:
{allocator}. Aux-k: k_aux = d_in / 2 on a
fixed {fractions} of latents marked dead. bf16: saelib's `TrainConfig(precision="bfloat16")`
against SAELens's `autocast=True` (its faster TopK mode). Matmul ceiling of the encoder
product (into a reused buffer): {ceil}. "limit" is that ceiling (fp32, or bf16 for the bf16
rows) over the encoder's 2 d_in d_sae FLOP per token.
SAELens TopK modes: {modes}. Load average before the runs: {min(loads):.1f} to
{max(loads):.1f} (other jobs shared the machine when it is above ~0.5).
"""
    path.write_text(text + targets(results))


def targets(results: dict) -> str:
    """The issues' targets, checked on these numbers (met / not met, never asserted)."""
    lines = ["", "| target | measured | met |", "|---|---:|:-:|"]
    for d_sae in results["settings"]["d_sae"]:
        topk = _row(results, d_sae, "topk")
        sl_topk = _fastest(results, d_sae, ["sl_topk_dense", "sl_topk_sparse"])
        if topk and str(d_sae) in results["ceiling"]:
            share = topk["tokens_per_s"] / _limit(results, d_sae)
            lines.append(
                f"| TopK fp32 d_sae {d_sae:,}: >= 60% of the limit | {share:.0%} "
                f"| {'yes' if share >= 0.6 else 'no'} |"
            )
        if topk and sl_topk:
            ratio = topk["tokens_per_s"] / sl_topk["tokens_per_s"]
            lines.append(_target(f"TopK d_sae {d_sae:,}: >= 4x SAELens's fastest", ratio, 4))
        for f in results["settings"].get("dead_fractions", [0.25]):
            aux = _row(results, d_sae, "topk_auxk", f)
            if topk and aux:
                over = topk["tokens_per_s"] / aux["tokens_per_s"] - 1
                goal = " <= 25%" if f == 0.05 else ""
                met = ("yes" if over <= 0.25 else "no") if goal else "-"
                lines.append(
                    f"| aux-k d_sae {d_sae:,}, {f:.0%} dead: over TopK{goal} | {over:.0%} | {met} |"
                )
        relu, sl_relu = _row(results, d_sae, "relu_l1"), _row(results, d_sae, "sl_relu_l1")
        if relu and sl_relu:
            ratio = relu["tokens_per_s"] / sl_relu["tokens_per_s"]
            lines.append(_target(f"ReLU/L1 d_sae {d_sae:,}: >= 1.5x SAELens", ratio, 1.5))
        for fp32, bf16, label in (("topk", "topk_bf16", "TopK"), ("relu_l1", "relu_l1_bf16",
                                  "ReLU/L1")):  # fmt: skip
            a, b = _row(results, d_sae, fp32), _row(results, d_sae, bf16)
            if a and b:
                ratio = b["tokens_per_s"] / a["tokens_per_s"]
                lines.append(_target(f"{label} bf16 d_sae {d_sae:,}: >= 2x fp32", ratio, 2))
        pairs = [("topk", sl_topk), ("relu_l1", sl_relu)]
        for ours, theirs in pairs:
            mine = _row(results, d_sae, ours)
            if mine and theirs:
                a, b = mine["peak_rss_bytes"], theirs["peak_rss_bytes"]
                lines.append(
                    f"| {ours} d_sae {d_sae:,}: peak memory <= SAELens's | "
                    f"{a / 2**30:.2f} / {b / 2**30:.2f} GiB | {'yes' if a <= b else 'no'} |"
                )
    return "\n".join(lines) + "\n"


def _target(label: str, ratio: float, goal: float) -> str:
    return f"| {label} | {ratio:.2f}x | {'yes' if ratio >= goal else 'no'} |"


if __name__ == "__main__":
    main()
