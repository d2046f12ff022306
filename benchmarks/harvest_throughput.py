"""Harvesting activations from SmolLM2-135M: speed by depth, and memory against token count.

1. Throughput (tokens/s) of ``saelib.lm.activations``' forward at a shallow and a deep
   ``hook_resid_post`` (``run_with_cache`` with ``stop_at_layer``) against the same call
   without the early stop (a full forward, logits included), on the same tokens; median of
   ``--repeats`` round-robin repeats after a warm-up.
2. Peak memory: for each of ``--sizes`` token counts, a fresh process harvests that many
   tokens into a sharded cache, and another fresh process trains a TopK SAE for one pass
   over the cache through ``ShardedBatches``. Each reports its peak resident set size
   (VmHWM, reset after imports and model load) and its resident size before the work
   began, so the growth due to the data is the difference. If streaming works, the peak
   does not grow with the token count while the cache on disk grows linearly.

Run from the repository root::

    .venv/bin/python benchmarks/harvest_throughput.py              # ~5 min on 2 cores
    .venv/bin/python benchmarks/harvest_throughput.py --quick      # smoke run, writes nothing

Writes ``benchmarks/results/harvest_throughput.json`` and ``.md`` (with the machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine_info import cpu_model, memory_gib

DEFAULT_OUT = Path("benchmarks/results/harvest_throughput.json")


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_mib() -> float:
    """Peak RSS since the last :func:`reset_peak` (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def corpus_tokens(n_tokens: int, n_ctx: int):
    from saelib.lm.corpus import build_corpus
    from saelib.lm.model import load_tokenizer

    return build_corpus(load_tokenizer(), n_ctx=n_ctx, n_tokens=n_tokens)


# -------------------------------------------------------------- children (fresh processes)


def child_harvest(args) -> dict:
    from saelib.lm.activations import harvest
    from saelib.lm.model import load_model, resid_hook

    corpus = corpus_tokens(args.tokens, args.n_ctx)
    lm = load_model()
    before = rss_mib()
    reset_peak()  # the model load's own peak (two copies of the weights) is not the harvest's
    start = time.perf_counter()
    cache = harvest(
        lm,
        corpus.tokens,
        [resid_hook(args.layer)],
        args.dir,
        corpus_sha256=corpus.sha256,
        batch_size=args.batch_size,
        rows_per_shard=args.rows_per_shard,
        progress=False,
    )
    seconds = time.perf_counter() - start
    disk = sum(p.stat().st_size for p in Path(args.dir).rglob("*.safetensors"))
    return {
        "tokens": cache.n_tokens,
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": peak_mib(),
        "cache_mib": disk / 2**20,
    }


def child_train(args) -> dict:
    from saelib.lm.activations import open_cache
    from saelib.saes import SAEConfig, make_sae
    from saelib.training import TrainConfig, Trainer

    cache = open_cache(args.dir)
    hook = cache.hooks[0]
    data = cache.batches(hook, batch_size=args.train_batch)
    sae = make_sae(
        SAEConfig(d_in=cache.manifest["d_model"], d_sae=8 * 576, architecture="topk", k=32)
    )
    before = rss_mib()
    reset_peak()
    start = time.perf_counter()
    n_steps = data.per_pass  # one pass over every cached token
    Trainer(sae, TrainConfig(n_steps=n_steps, lr=4e-4, progress=False, log_every=n_steps)).fit(data)
    return {
        "steps": n_steps,
        "tokens": n_steps * args.train_batch,
        "seconds": time.perf_counter() - start,
        "rss_before_mib": before,
        "peak_rss_mib": peak_mib(),
    }


def run_child(kind: str, args, **extra) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--threads", str(args.threads)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=os.environ | {"TQDM_DISABLE": "1"}
    )
    if done.returncode != 0:
        raise SystemExit(f"child {' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------- throughput (this process)


@torch.no_grad()
def throughput(args) -> list[dict]:
    from saelib.lm.model import load_model, resid_hook

    lm = load_model()
    tokens = corpus_tokens(args.throughput_tokens, args.n_ctx).tokens
    cases = [
        (f"early stop after block {args.shallow}", resid_hook(args.shallow), args.shallow + 1),
        (f"early stop after block {args.deep}", resid_hook(args.deep), args.deep + 1),
        (f"full forward (no stop), hook at block {args.shallow}", resid_hook(args.shallow), None),
    ]

    def run(hook, stop):
        for seqs in tokens.split(args.batch_size):
            lm.bridge.run_with_cache(seqs, names_filter=[hook], stop_at_layer=stop)

    run(cases[0][1], cases[0][2])  # warm-up
    times = {name: [] for name, _, _ in cases}
    loads = []
    for _ in range(args.repeats):
        for name, hook, stop in cases:
            loads.append(os.getloadavg()[0])
            start = time.perf_counter()
            run(hook, stop)
            times[name].append(time.perf_counter() - start)
    n = tokens.numel()
    full = statistics.median(times[cases[2][0]])
    rows = []
    for name, hook, stop in cases:
        t = statistics.median(times[name])
        rows.append(
            {
                "case": name,
                "hook": hook,
                "stop_at_layer": stop,
                "tokens": n,
                "seconds_median": t,
                "seconds_all": times[name],
                "tokens_per_s": n / t,
                "speedup_vs_full": full / t,
            }
        )
    return rows, loads


# -------------------------------------------------------------- report


def machine() -> dict:
    from importlib.metadata import version

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "transformer_lens": version("transformer-lens"),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        f"SmolLM2-135M (offline GGUF, float32), {s['n_ctx']}-token sequences, batches of "
        f"{s['batch_size']}; {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"{s['threads']} torch threads; torch {m['torch']}, transformer-lens "
        f"{m['transformer_lens']}; {m['date']}. Load average during the timing: "
        f"{min(result['load_average']):.2f} to {max(result['load_average']):.2f} (shared machine).",
        "",
        "| forward | tokens | seconds (median) | tokens/s | speed-up vs full forward |",
        "|---|---|---|---|---|",
    ]
    for r in result["throughput"]:
        lines.append(
            f"| {r['case']} | {r['tokens']} | {r['seconds_median']:.1f} | "
            f"{r['tokens_per_s']:.0f} | {r['speedup_vs_full']:.2f}x |"
        )
    lines += [
        "",
        f"Memory (fresh process per row; harvest at `{result['memory_hook']}`, shards of "
        f"{s['rows_per_shard']} tokens; training: TopK SAE 4608 latents, k 32, batches of "
        f"{s['train_batch']}, one pass over the cache):",
        "",
        "| tokens | cache on disk (MiB) | harvest: RSS before (MiB) | harvest: peak RSS (MiB) "
        "| harvest tokens/s | train: RSS before (MiB) | train: peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for h, t in zip(result["memory"]["harvest"], result["memory"]["train"], strict=True):
        lines.append(
            f"| {h['tokens']} | {h['cache_mib']:.0f} | {h['rss_before_mib']:.0f} | "
            f"{h['peak_rss_mib']:.0f} | {h['tokens'] / h['seconds']:.0f} | "
            f"{t['rss_before_mib']:.0f} | {t['peak_rss_mib']:.0f} |"
        )
    lines += ["", f"Command: `{result['command']}`", ""]
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def notes(result: dict) -> list[str]:
    h, t = result["memory"]["harvest"], result["memory"]["train"]
    growth = lambda rows: rows[-1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]  # noqa: E731
    ratio = h[-1]["tokens"] / h[0]["tokens"]
    disk = h[-1]["cache_mib"] - h[0]["cache_mib"]
    return [
        f"From {h[0]['tokens']} to {h[-1]['tokens']} tokens ({ratio:.0f}x) the cache on disk "
        f"grows by {disk:.0f} MiB while the harvest's peak RSS changes by {growth(h):+.0f} MiB "
        f"and the training run's by {growth(t):+.0f} MiB: memory is bounded by one shard "
        f"(harvest: one shard of activations per hook; training: one shard plus its shuffled "
        f"copy), not by the token count. The same holds at any size: a cache larger than RAM "
        f"costs disk and time, which grow linearly, not memory.",
        "Early stop: the forward runs only blocks 0..L, so cost grows with depth; the full "
        "forward also pays the final norm and the 49,152-way unembedding.",
        "Timings are from a shared 2-core machine (other sessions running): pessimistic and "
        "noisy; the JSON keeps every repeat.",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", choices=["harvest", "train"])
    p.add_argument("--quick", action="store_true", help="small smoke run; writes nothing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-ctx", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shallow", type=int, default=3)
    p.add_argument("--deep", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--throughput-tokens", type=int, default=2048)
    p.add_argument("--sizes", type=int, nargs="+", default=[32_768, 65_536, 131_072])
    p.add_argument("--layer", type=int, default=1, help="hook of the memory runs")
    p.add_argument("--rows-per-shard", type=int, default=8192)
    p.add_argument("--train-batch", type=int, default=1024)
    p.add_argument("--tokens", type=int)
    p.add_argument("--dir")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        run = child_harvest if args.child == "harvest" else child_train
        print(json.dumps(run(args)))
        return
    if args.quick:
        args.repeats, args.throughput_tokens, args.sizes = 1, 512, [2048, 4096]
    rows, loads = throughput(args)
    memory = {"harvest": [], "train": []}
    for size in args.sizes:
        folder = tempfile.mkdtemp(prefix="saelib_bench_")
        try:
            common = dict(dir=folder, n_ctx=args.n_ctx)
            memory["harvest"].append(
                run_child(
                    "harvest",
                    args,
                    tokens=size,
                    layer=args.layer,
                    batch_size=args.batch_size,
                    rows_per_shard=args.rows_per_shard,
                    **common,
                )
            )
            memory["train"].append(run_child("train", args, train_batch=args.train_batch, **common))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(json.dumps({"size": size, **memory["harvest"][-1]}), flush=True)
    settings = {k: getattr(args, k) for k in ("threads", "n_ctx", "batch_size", "shallow", "deep")}
    settings |= {k: getattr(args, k) for k in ("repeats", "sizes", "rows_per_shard", "train_batch")}
    result = {
        "machine": machine(),
        "settings": settings,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "load_average": loads,
        "throughput": rows,
        "memory_hook": f"blocks.{args.layer}.hook_resid_post",
        "memory": memory,
    }
    result["notes"] = notes(result)
    text = markdown(result)
    print(text)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
