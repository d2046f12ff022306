"""Feature dashboards on SmolLM2-135M: the pass's time over the ci corpus, and its memory
against corpus size.

The corpus is chapter 05's ci corpus (``build_corpus(n_ctx=64, seed=0)``, 2,752 sequences,
176,128 tokens, from the shared cache); the SAE is a TopK one of 576 latents (k = 32) at
``blocks.6.hook_resid_post``, trained here for one pass over chapter 05's cached training
activations of that hook (320 steps of 512). For each of ``--fractions`` of the corpus
(1/8, 1/4, 1/2, 1: the 1x, 2x, 4x, 8x sizes), a fresh process loads the model and the
SAE, resets its peak resident set size (VmHWM), and runs ``compute_dashboard`` on that
many sequences with ``--latents`` selected latents (statistics are kept for all 576):
first the streaming pass, then the rest (quantile groups, the windows' second pass over
the needed sequences only, promoted tokens, nearest latents). If the pass streams, the
peak RSS does not grow with the corpus. One torch thread throughout.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dashboards.py      # ~5 min on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dashboards.py --quick   # smoke, writes nothing

Writes ``benchmarks/results/dashboards_ci.json`` and ``.md`` (with the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from harvest_throughput import machine, peak_mib, reset_peak, rss_mib

DEFAULT_OUT = Path("benchmarks/results/dashboards_ci.json")
N_CTX, LAYERS, LAYER, TRAIN_TOKENS, EVAL_TOKENS, CE_SEQUENCES = 64, (2, 6), 6, 163_840, 8192, 64


def ci_corpus(lm):
    """Chapter 05's ci corpus and its cached training activations (made on first use)."""
    from saelib.lm.activations import harvest
    from saelib.lm.corpus import build_corpus
    from saelib.lm.model import resid_hook

    n_train, n_eval = TRAIN_TOKENS // N_CTX, EVAL_TOKENS // N_CTX
    n_tokens = (n_train + n_eval + CE_SEQUENCES) * N_CTX
    corpus = build_corpus(lm.tokenizer, n_ctx=N_CTX, n_tokens=n_tokens, seed=0)
    hooks = [resid_hook(layer) for layer in LAYERS]
    common = dict(skip_first=1, rows_per_shard=16384, progress=False)
    train = harvest(
        lm, corpus.tokens[:n_train], hooks, corpus_sha256=corpus.sha256 + ":train", **common
    )
    return corpus, train


def train_sae(directory: str) -> dict:
    """A TopK SAE (576 latents, k 32) at block 6, saved with its site to ``directory``."""
    from saelib.lm.model import load_model, resid_hook
    from saelib.lm.site import save_trained
    from saelib.lm.sweep import ScaledBatches
    from saelib.saes import SAEConfig, make_sae
    from saelib.training import TrainConfig, Trainer

    lm = load_model()
    _, train = ci_corpus(lm)
    hook = resid_hook(LAYER)
    site = train.site(hook)
    sae = make_sae(SAEConfig(d_in=lm.d_model, d_sae=576, architecture="topk", k=32, seed=0))
    cfg = TrainConfig(n_steps=320, lr=2e-3, aux_k=256, dead_after_tokens=16384, progress=False)
    start = time.perf_counter()
    history = Trainer(sae, cfg).fit(ScaledBatches(train.batches(hook, 512, seed=0), site))
    save_trained(sae, site, directory)
    last = history[-1]
    return {"seconds": time.perf_counter() - start, "loss": last["loss"], "l0": last["l0"]}


def child(args) -> dict:
    """One dashboard run on the first ``fraction`` of the corpus, in this fresh process."""
    from saelib.lm import dashboard_pass
    from saelib.lm.dashboard import DashboardConfig, compute_dashboard
    from saelib.lm.model import load_model
    from saelib.lm.site import load_trained

    lm = load_model()
    corpus, _ = ci_corpus(lm)
    sae, site = load_trained(args.sae)
    n_seq = round(len(corpus.tokens) * args.fraction)
    tokens = corpus.tokens[:n_seq]
    latents = torch.linspace(0, sae.cfg.d_sae - 1, args.latents).round().long().tolist()
    config = DashboardConfig(batch_size=args.batch_size)
    checkpoint = Path(args.dir) / "state.safetensors"
    before = rss_mib()
    reset_peak()  # the model load's own peak is not the dashboard's
    start = time.perf_counter()
    dashboard_pass.stream(sae, lm, tokens, site, config, checkpoint, progress=False)
    streamed = time.perf_counter()
    # the pass's final checkpoint is found: this call does only what follows the pass
    dash = compute_dashboard(sae, lm, tokens, site, latents, config, checkpoint, progress=False)
    done = time.perf_counter()
    return {
        "fraction": args.fraction,
        "n_seq": n_seq,
        "tokens": tokens.numel(),
        "pass_seconds": streamed - start,
        "rest_seconds": done - streamed,
        "tokens_per_second": tokens.numel() / (streamed - start),
        "rss_before_mib": before,
        "peak_rss_mib": peak_mib(),
        "latents_firing": int((dash.fire_count > 0).sum()),
        "median_density": float(dash.density.median()),
    }


def run_child(args, fraction: float, sae_dir: str, work: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--fraction", str(fraction), "--sae", sae_dir]
    cmd += ["--dir", work, "--latents", str(args.latents), "--batch-size", str(args.batch_size)]
    env = os.environ | {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"child {shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Feature dashboards: time and memory (SmolLM2-135M, blocks.6.hook_resid_post)",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; torch {m['torch']}, 1 thread; "
        f"{m['date']}. Command: `{result['command']}`.",
        "",
        "| corpus | sequences | tokens | pass (s) | tokens/s | rest (s) | peak RSS growth (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        growth = r["peak_rss_mib"] - r["rss_before_mib"]
        lines.append(
            f"| {r['fraction']:g}x ci | {r['n_seq']} | {r['tokens']} | {r['pass_seconds']:.1f} | "
            f"{r['tokens_per_second']:.0f} | {r['rest_seconds']:.1f} | {growth:.0f} |"
        )
    lines += ["", *result["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", action="store_true")
    p.add_argument("--quick", action="store_true", help="small smoke run; writes nothing")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0])
    p.add_argument("--fraction", type=float)
    p.add_argument("--latents", type=int, default=32, help="latents with pages and windows")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--sae")
    p.add_argument("--dir")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.fractions = [0.01, 0.02]
    with tempfile.TemporaryDirectory(prefix="saelib_dash_") as tmp:
        sae_dir = str(Path(tmp) / "sae")
        training = train_sae(sae_dir)
        runs = []
        for fraction in args.fractions:
            work = Path(tmp) / f"run_{fraction}"
            work.mkdir()
            runs.append(run_child(args, fraction, sae_dir, str(work)))
            print(json.dumps(runs[-1]), flush=True)
    growth = [r["peak_rss_mib"] - r["rss_before_mib"] for r in runs]
    notes = [
        f"The SAE: TopK, 576 latents, k 32, trained in {training['seconds']:.0f} s "
        f"(last step: loss {training['loss']:.3f}, L0 {training['l0']:.1f}). Statistics "
        f"for all 576 latents; pages and windows for {args.latents}.",
        f"Peak RSS growth over the run, from {runs[0]['tokens']} to {runs[-1]['tokens']} "
        f"tokens: {min(growth):.0f} to {max(growth):.0f} MiB.",
        "Most of that peak is the model's forward at a batch of 8 sequences: a harvest alone "
        "peaks at about the same RSS (benchmarks/results/harvest_throughput.md).",
        "'pass': the streaming pass (forward to block 6, encode, statistics); 'rest': "
        "quantile groups, the second pass over the sequences holding examples, promoted "
        "tokens, nearest latents.",
    ]
    result = {
        "machine": machine(),
        "settings": {"latents": args.latents, "batch_size": args.batch_size, "threads": 1},
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "training": training,
        "runs": runs,
        "notes": notes,
    }
    print(markdown(result))
    if args.quick:
        return  # a smoke run writes nothing
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
